"""What the project says to itself: training text, held-out sentences and voices.

Training text is random word sequences over a phonetically varied vocabulary, with hums
(``[[mmmm]]``) and pauses mixed in. Evaluation uses other sentences (the IEEE "Harvard"
sentences, public domain) and other voices, so no evaluation sentence or voice is trained on.
"""

from __future__ import annotations

import numpy as np

from .speech import Voice

WORDS = """
a about above across after again against all almost alone along also always am among an and
another answer any apple are arm around as ask at away baby back bad bag ball banana band bank
bare be beach bear beat because bed been before began begin behind being below best better
between big bird black blue boat body book born both bottle bought box boy bread break bright
bring brother brought build busy but butter buy by call came camp can car care carry case cat
catch chair change cheap check child choose church city clean clear climb clock close cloud
cold come common cook cool copy corner could count country course cover cross cup cut dance
dark day deep did dinner do does dog done door double down draw dream dress drink drive drop
dry each early earth easy eat edge egg eight either empty end enough even evening ever every
eye face fact fair fall family far farm fast father feel feet few field fight fill find fine
fire first fish five floor flower fly follow food foot for forest form four free fresh friend
from front full fun game garden gave get girl give glass go gold good got great green ground
group grow had hair half hand happy hard has hat have he head hear heart heavy help her here
high hill him his hold home hope horse hot hour house how huge hundred I idea if important in
inside into is it job join jump just keep kind king kitchen knew know lady lake land large last
late laugh lead learn leave left less letter life light like line lip listen little live long
look lose loud love low machine made make man many map mark market may me mean meet men middle
might mile milk mind minute miss mix moment money month moon more morning most mother mountain
mouth move much music must my name near neck need never new next nice night nine no noise north
not nothing now number ocean of off often oil old on once one only open or orange other our
out over own page paint pair paper park part pass past pay peace pen people pepper perhaps
person pick picture piece place plan plant play please pocket point poor possible power pretty
problem pull push put queen question quick quiet rain ran reach read ready red remember rest
rich ride right ring river road rock room round rule run sad safe said same sat save saw say
school sea seat second see seem seven shall shape she ship shoe shop short should show side
simple since sing sister sit six sky sleep slow small smile snow so some song soon sound south
space speak spring stand star start stay step still stone stop story street strong such summer
sun supper sure swim table take talk tall teach team tell ten than thank that the their them
then there these they thing think this those three through time tiny to today together told
too took top touch town tree true try turn two under until up upon us use very view voice walk
wall want warm was watch water way we wear weather week well went were what wheel when where
which while white who whole why wide will wind window winter wish with without woman wonder
wood word work world would write year yellow yes yet you young your zoo
maybe member mumble bubble pumpkin problem impossible moving bump ample umbrella wampum bombay
mom pop bob baby maybe embalm hummingbird summer membrane
""".split()

HUMS = ("[[mmmmm]]", "[[mmmmmmmm]]", "[[m@m]]", "[[hmmm]]", "[[mhm]]", "[[mmm]]", "[[@mmm]]")

EVAL_SENTENCES = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
    "Mmm, maybe mom made the bread.",
    "Bob bought a map, then paused. Hmm.",
)
EVAL_HUMS = ("[[mmmmmmm]]", "[[mmmm]] okay", "[[@mmmmm]]")

TRAIN_VOICE_NAMES = (
    "en-us+m1", "en-us+m2", "en-us+m3", "en-us+m5", "en-us+f1", "en-us+f2", "en-us+klatt", "en-us+adam",
    "en+m4", "en+f3", "en+klatt3", "en+belinda", "en+john", "en+linda", "en+max", "en+paul",
    "en-gb-scotland+robert", "en-us+zac", "en+Alex", "en-029+m6",
)
EVAL_VOICE_NAMES = ("en-us+m7", "en+f4", "en-us+f5", "en+Andy", "en-us+steph", "en-gb-x-rp+david")


def training_text(rng: np.random.Generator) -> str:
    """A random 'sentence' of 3-14 words with commas, maybe a hum."""
    parts = []
    for _ in range(int(rng.integers(1, 3))):
        words = list(rng.choice(WORDS, size=int(rng.integers(3, 10))))
        if rng.random() < 0.3:
            words.insert(int(rng.integers(0, len(words) + 1)), words[0] + ",")
        parts.append(" ".join(words) + rng.choice([".", ",", "?", "!"]))
        if rng.random() < 0.35:
            parts.append(str(rng.choice(HUMS)))
    return " ".join(parts)


def voice_variant(name: str, rng: np.random.Generator) -> Voice:
    """A voice with a random speed (words/min), pitch and pitch range."""
    return Voice(name, speed=int(rng.integers(110, 280)), pitch=int(rng.integers(15, 85)), range=int(rng.integers(20, 90)))
