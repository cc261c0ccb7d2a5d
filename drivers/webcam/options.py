"""Options of the webcam driver."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from flamecast.plugins import DriverOptions


class WebcamOptions(DriverOptions):
    """Options of the webcam driver (all optional). docs/webcam.md explains each group."""

    source: Literal["auto", "camera", "browser", "file"] = Field(
        "auto", description="where frames come from: a local camera, the browser's camera (the session's "
        "video track), a video file; 'auto' = file when 'file' is set, else the browser's camera in a "
        "session that carries one, else the local camera")
    device: str = Field("0", description="local camera: an index (0, 1, ...) or a device path (/dev/video2)")
    file: str | None = Field(None, description="video file (anything PyAV decodes)")
    loop: bool = Field(False, description="start the video file again when it ends")
    width: int = Field(640, ge=64, le=3840, description="local camera: requested frame width")
    height: int = Field(480, ge=48, le=2160, description="local camera: requested frame height")
    fps: float = Field(30.0, gt=0, le=120, description="frames per second of the camera and of the driver")
    tracker: Literal["auto", "landmarks", "deca"] = Field(
        "auto", description="'landmarks': FaceMesh + fitting on the head's space; 'deca': DECA's pose and "
        "expression, the rotation refined by the landmarks (needs deca_model.tar and a FLAME head); 'auto': DECA when "
        "both are there")
    weights_dir: str | None = Field(None, description="weights folder holding deca/deca_model.tar "
                                    "(default $FLAMECAST_WEIGHTS or ~/.cache/flamecast/weights)")
    deca_refine: float = Field(0.7, ge=0, le=1, description="with DECA: how far the landmark fit moves "
                               "DECA's head rotation toward its own (0: DECA's alone, 1: the fit's)")
    deca_device: str = Field("cpu", description="torch device DECA runs on ('cpu', 'cuda')")
    max_faces: int = Field(3, ge=1, le=8, description="faces FaceMesh looks for; the largest is followed")
    min_cutoff: float = Field(2.0, gt=0, le=30, description="One-Euro filter: cutoff at rest, Hz (lower: "
                              "steadier, more lag)")
    beta: float = Field(4.0, ge=0, le=50, description="One-Euro filter: cutoff increase per unit/s of speed "
                        "(higher: less lag in fast moves)")
    d_cutoff: float = Field(1.0, gt=0, le=30, description="One-Euro filter: cutoff of the speed estimate, Hz")
    hold_seconds: float = Field(0.5, ge=0, le=10, description="face lost: keep the last pose this long")
    ease_seconds: float = Field(1.0, gt=0, le=10, description="face lost: then ease to rest over this long; "
                                "also the time to blend back when the face returns (a third of it)")
    identity_frames: int = Field(5, ge=1, le=100, description="frames with a face the person's face shape "
                                 "is fitted on, at the start")
    max_fit_error: float = Field(0.15, gt=0, le=1, description="fits worse than this (RMS landmark error "
                                 "over face size) count as no face")
    neck_share: float = Field(0.6, ge=0, le=1, description="share of the head rotation given to the neck "
                              "joint (the rest goes to the global joint)")
    expression_gain: float = Field(1.0, ge=0, le=3, description="scales the expression channels")
    mirror: bool = Field(False, description="mirror the person (turn left -> the avatar turns to its right)")
    translation: bool = Field(False, description="send the head's sideways and vertical movement as translation")

    @model_validator(mode="after")
    def _file_source_has_file(self):
        if self.source == "file" and not self.file:
            raise ValueError("source 'file' needs the option file=PATH")
        return self
