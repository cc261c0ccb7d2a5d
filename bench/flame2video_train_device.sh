#!/bin/bash
# FLAME2Video training, pipeline proof on one GPU with no network: a synthetic multi-view
# dataset drawn by flamecast itself, then every phase briefly (vae, 1, 2, 3, distill), from
# random weights of the `small` configuration. Results (JSON, loss/PSNR image, sample frames,
# one validation video, each suffixed -run<r>) go to $OUT (default /tmp/flamecast-train).
#
# Carried (see docs/training.md): .whl/ (diffusers, pydantic, pyzmq, ...), runs/f2v-wheels/ (av),
# runs/f2v-avatars/ (avatars baked here with `flamecast data flame2video bake-avatars`: the GPU
# machine has no mediapipe).
#   bash bench/flame2video_train_device.sh
# Per-phase time caps in minutes: MINUTES="0.6 1.0 0.6 0.7 0.6" (vae 1 2 3 distill); or fixed
# steps per phase, STEPS="120 80 60 50 25"; RUNS="1 2" trains twice, in two processes, one after
# the other (about 3 min each on an H200 with those steps and CLIPS=8: both fit one call).
set -u -o pipefail
OUT=${OUT:-/tmp/flamecast-train}; mkdir -p "$OUT"
RUN=${RUN:-/tmp/f2v-run}; DATA=${DATA:-/tmp/f2v-data}
if [ -z "${SKIP_INSTALL:-}" ]; then  # SKIP_INSTALL=1: flamecast is installed already (a dry run on a CPU)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl runs/f2v-wheels/*.whl 2>&1 | grep -v "already exists" || true
  rm -rf /tmp/site/flamecast /tmp/site/flamecast-*.dist-info
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target /tmp/site . 2>&1 | grep -v "already exists"
  cp -r renderer/head/assets /tmp/site/flamecast/renderer/head/ 2>/dev/null
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo cpu) | tee "$OUT/gpu.txt"
F="python3 -m flamecast.renderer.flame2video.training"
# time outside the caps or steps (checks, setup, decoding, renderings, data, validations, export),
# phases in one process as below: 13-24 s a phase on the H200 on 2026-12-05 (STEPS="120 80 60 50 25",
# CLIPS=8; validation 4-9 s of it), 40-50 s a phase on 2026-12-04 with one process per phase. On the
# project's 2-core CPU (2026-12-04: tiny model, float32, batch 4, window 8, 4 views, 5 steps a phase,
# 16 clips x 32 frames x 4 views at 128): 13-29 s a phase, validation most of it.
read -r M_VAE M_1 M_2 M_3 M_D <<< "${MINUTES:-0.6 1.0 0.6 0.7 0.6}"
t0=$(date +%s)
$F data make-synthetic --avatars runs/f2v-avatars --out "$DATA" --clips ${CLIPS:-16} --frames 32 --views 4 \
  --size ${SIZE:-128} --val-every 4 || exit 1
echo "dataset: $(( $(date +%s) - t0 )) s"
# Each of RUNS (default "1") is one Python process training every phase into $RUN-run<r>, with its
# results under $OUT suffixed -run<r>: RUNS="1 2" repeats the run in a second process.
# STEPS="a b c d e" gives each phase a fixed number of steps instead of the MINUTES caps, so that
# both runs take the same steps.
read -r S_VAE S_1 S_2 S_3 S_D <<< "${STEPS:-}"
limit() { if [ -n "${STEPS:-}" ]; then echo "--steps $1"; else echo "--steps 100000 --max-minutes $2"; fi; }
one_run() {
  local r=$1 R="$RUN-run$1" t1; rm -rf "$R"; t1=$(date +%s)
  # no checkpoints (this run is never resumed: the machine goes with the call); the export is written
  local COMMON="--data $DATA --out $R --mixed-precision bf16 --workers 0 --checkpoint-every ${CHECKPOINT_EVERY:-0} \
    --val-clips 4 --val-frames 16 --val-steps 4 --no-progress"
  # The phases run one after another in one Python process, each line the arguments of `$F ...`:
  # the imports, CUDA start-up and first uses are paid once instead of five times.
  python3 -c '
import shlex, sys, time
from flamecast.renderer.flame2video.training.__main__ import main
for line in sys.stdin:
    t = time.perf_counter()
    if line.strip() and (rc := main(shlex.split(line))):
        sys.exit(rc)
    print(f"wall {time.perf_counter() - t:.1f} s", flush=True)
' <<EOF || return 1
train --phase vae --random-init --model ${MODEL:-small} --batch 32 --lr 3e-4 --val-every 150 $(limit "$S_VAE" $M_VAE) $COMMON
train --phase 1 --batch 32 --lr 3e-4 --val-every 200 $(limit "$S_1" $M_1) $COMMON
train --phase 2 --batch 8 --window 8 --lr 2e-4 --val-every 100 $(limit "$S_2" $M_2) $COMMON
train --phase 3 --batch 4 --window 8 --views 4 --lr 2e-4 --val-every 80 $(limit "$S_3" $M_3) $COMMON
train --phase distill --batch 2 --window 8 --views 4 --lr 5e-5 --val-every 60 $(limit "$S_D" $M_D) $COMMON
EOF
  echo "run $r, all phases: $(( $(date +%s) - t1 )) s"
  python3 - "$R" "$OUT" "run$r" <<'EOF'
import json, sys
from pathlib import Path
import numpy as np, torch
from flamecast.renderer.flame2video.training.layout import read_video
from flamecast.renderer.flame2video.training.plots import plot_run
run, out, tag = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
phases = {p.parent.name: json.loads(p.read_text()) for p in sorted(run.glob("phase-*/summary.json"))}
meta = {"gpu": (out / "gpu.txt").read_text().strip(), "torch": torch.__version__, "phases": phases}
(out / f"flame2video-train-{tag}.json").write_text(json.dumps(meta, indent=1))
plot_run(run, out / f"training_loss-{tag}.png")
rows = []
for name in ("phase-1", "phase-3", "phase-distill"):
    videos = sorted((run / name / "validation").glob("*.mp4"))
    if videos:
        last = [v for v in videos if v.name.startswith(videos[-1].name[:11])][0]
        frames = read_video(last)
        rows.append(frames[len(frames) // 2])
        if name == "phase-distill":
            (out / f"validation_distill-{tag}.mp4").write_bytes(last.read_bytes())
if rows:
    from PIL import Image
    Image.fromarray(np.concatenate(rows, 0)).save(out / f"training_samples-{tag}.png")
for name, s in phases.items():
    v = s["validations"]
    print(tag, name, "steps", s["steps"], "samples/s %.1f" % (s["samples_per_s"] or 0), "peak GiB %.1f" % (s["peak_memory_gib"] or 0),
          "loss %.4f -> %.4f" % (s["loss_first"], s["loss_last"]), "psnr", [(e["step"], round(e["psnr"], 2)) for e in v if e.get("psnr")],
          "held-out loss", [(e["step"], round(e["held_out_loss"], 4)) for e in v if e.get("held_out_loss") is not None])
EOF
}
for r in ${RUNS:-1}; do one_run "$r" || exit 1; done
