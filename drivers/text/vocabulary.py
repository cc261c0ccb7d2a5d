"""The words of the procedural corpus: motions, emotions, modifiers and their captions.

Each motion and emotion has training phrases and held-out phrases. The held-out phrases are
never used to build training captions; ``flamecast eval text`` measures on them. Phrases are
third-person verb phrases ("nods", "looks happy") so they combine freely.
"""

from __future__ import annotations

from dataclasses import dataclass

MOTIONS = ("nod", "shake", "tilt_left", "tilt_right", "turn_left", "turn_right", "look_up", "look_down",
           "wag", "bob", "still", "talk")
EMOTIONS = ("happy", "smiling", "laughing", "sad", "angry", "surprised", "disgusted", "fearful", "neutral")

MOTION_PHRASES: dict[str, tuple[str, ...]] = {
    "nod": ("nods", "nods their head", "nods yes", "is nodding", "gives a nod", "nods in agreement",
            "nods the head up and down", "moves the head up and down", "nodding"),
    "shake": ("shakes their head", "shakes the head no", "shakes head", "is shaking the head",
              "says no with the head", "moves the head side to side", "shaking head"),
    "tilt_left": ("tilts the head to the left", "tilts head left", "leans the head to the left",
                  "cocks the head to the left", "tilting head to the left side", "bends the head toward the left shoulder",
                  "tilts the head sideways to the left", "drops the head onto the left shoulder"),
    "tilt_right": ("tilts the head to the right", "tilts head right", "leans the head to the right",
                   "cocks the head to the right", "tilting head to the right side", "bends the head toward the right shoulder",
                   "tilts the head sideways to the right", "drops the head onto the right shoulder"),
    "turn_left": ("turns left", "turns the head to the left", "looks to the left", "turns head left",
                  "looks left", "faces left", "rotates the head to the left", "glances left"),
    "turn_right": ("turns right", "turns the head to the right", "looks to the right", "turns head right",
                   "looks right", "faces right", "rotates the head to the right", "glances right"),
    "look_up": ("looks up", "looks upward", "raises the head", "tilts the head back and looks up",
                "gazes up", "lifts the chin"),
    "look_down": ("looks down", "looks downward", "lowers the head", "bows the head", "gazes down",
                  "drops the chin"),
    "wag": ("wags the head", "wags head side to side", "wobbles the head", "sways the head from side to side",
            "rocks the head side to side"),
    "bob": ("bobs the head", "bobs head to the beat", "bobs along to music", "grooves to the music",
            "head bobbing"),
    "still": ("holds still", "stays still", "keeps the head still", "does not move", "remains motionless",
              "stands still", "stays calm and still"),
    "talk": ("talks", "speaks", "is talking", "says something", "chats", "is speaking", "talking",
             "has a conversation", "talks to someone", "speaks to the audience", "tells a story"),
}

MOTION_HELDOUT: dict[str, tuple[str, ...]] = {
    "nod": ("agrees by nodding", "signals yes with a nod", "nods approvingly", "keeps nodding along"),
    "shake": ("shakes the head in disagreement", "refuses by shaking the head", "signals no with a head shake",
              "disagrees, shaking the head"),
    "tilt_left": ("inclines the head toward the left shoulder", "tips the head sideways to the left",
                  "leans the head over to the left side"),
    "tilt_right": ("inclines the head toward the right shoulder", "tips the head sideways to the right",
                   "leans the head over to the right side"),
    "turn_left": ("glances over to the left", "rotates the head leftward", "turns to face the left side"),
    "turn_right": ("glances over to the right", "rotates the head rightward", "turns to face the right side"),
    "look_up": ("looks up at the sky", "turns the eyes and head upward", "looks up at the ceiling"),
    "look_down": ("looks down at the floor", "looks down at the ground", "turns the head downward"),
    "wag": ("waggles the head from side to side", "wags the head back and forth",
            "sways the head left and right"),
    "bob": ("bobs the head to a song", "bobs the head rhythmically", "bobs along with the beat"),
    "still": ("remains completely still", "doesn't move at all", "keeps perfectly still"),
    "talk": ("is having a conversation", "speaks to the camera", "is chatting away"),
}

EMOTION_PHRASES: dict[str, tuple[str, ...]] = {
    "happy": ("looks happy", "is happy", "looks cheerful", "is joyful", "looks pleased", "feels happy"),
    "smiling": ("smiles", "is smiling", "gives a smile", "grins", "smiles warmly", "smiling"),
    "laughing": ("laughs", "is laughing", "bursts out laughing", "chuckles", "laughs out loud"),
    "sad": ("looks sad", "is sad", "looks unhappy", "looks sorrowful", "feels down", "looks upset"),
    "angry": ("looks angry", "is angry", "looks furious", "is mad", "scowls", "looks annoyed"),
    "surprised": ("looks surprised", "is surprised", "looks astonished", "is shocked", "looks amazed"),
    "disgusted": ("looks disgusted", "is disgusted", "looks grossed out", "grimaces in disgust", "looks repulsed"),
    "fearful": ("looks scared", "is afraid", "looks frightened", "looks fearful", "is terrified"),
    "neutral": ("looks neutral", "has a neutral face", "keeps a straight face", "looks expressionless",
                "has a blank expression"),
}

EMOTION_HELDOUT: dict[str, tuple[str, ...]] = {
    "happy": ("seems delighted", "looks glad"),
    "smiling": ("breaks into a smile", "flashes a big smile"),
    "laughing": ("cracks up laughing", "giggles"),
    "sad": ("seems heartbroken", "looks miserable"),
    "angry": ("seems enraged", "looks irritated and angry"),
    "surprised": ("seems stunned", "looks startled"),
    "disgusted": ("seems revolted", "looks nauseated with disgust"),
    "fearful": ("seems panicked and afraid", "looks anxious and scared"),
    "neutral": ("seems emotionless", "wears a poker face"),
}


@dataclass(frozen=True)
class Modifier:
    """A caption word with its effect: tempo and amplitude factors, or a repetition count."""

    words: tuple[str, ...]
    tempo: float = 1.0
    amplitude: float = 1.0
    count: int | None = None


TEMPO = {
    "slow": Modifier(("slowly", "gently and slowly", "at a slow pace", "in slow motion"), tempo=0.55),
    "fast": Modifier(("quickly", "fast", "rapidly", "energetically"), tempo=1.7),
}
TEMPO_HELDOUT = {"slow": ("leisurely", "very slowly"), "fast": ("briskly", "in a hurry")}
AMPLITUDE = {
    "small": Modifier(("slightly", "a little", "subtly", "barely"), amplitude=0.5),
    "big": Modifier(("a lot", "vigorously", "emphatically", "strongly"), amplitude=1.5),
}
AMPLITUDE_HELDOUT = {"small": ("just a tiny bit", "faintly"), "big": ("dramatically", "with big movements")}
REPEAT = {
    1: Modifier(("once", "one time"), count=1),
    2: Modifier(("twice", "two times"), count=2),
    3: Modifier(("three times", "a few times"), count=3),
}
REPEAT_HELDOUT = {2: ("a couple of times",), 3: ("thrice",)}
INTENSITY = {
    "mild": Modifier(("slightly", "a bit", "a little"), amplitude=0.55),
    "strong": Modifier(("very", "really", "extremely"), amplitude=1.35),
}
SUBJECTS = ("", "", "", "the person ", "he ", "she ", "they ", "the avatar ")
HELDOUT_SUBJECTS = ("", "the man ", "the woman ")
JOINERS = (" and ", ", then ", " while it ", ", ")
HELDOUT_JOINERS = (" and also ", " as it ")

# Motions that oscillate (repetition counts cycles) and that hold a direction (counts pulses).
OSCILLATING = ("nod", "shake", "wag", "bob")
DIRECTED = ("tilt_left", "tilt_right", "turn_left", "turn_right", "look_up", "look_down")
