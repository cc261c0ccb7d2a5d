#!/bin/bash
# FLAME2Video on a GPU machine with no network: install the carried wheels (.whl/, see
# docs/benchmarks.md) and flamecast into /tmp/site, check correctness, benchmark.
#   bash bench/flame2video_device.sh eager     # GPU tests, bf16 check, live/hq/paper eager
#   bash bench/flame2video_device.sh compile   # live/hq with torch.compile modes
#   PROFILES=live,paper NAME=a bash bench/flame2video_device.sh final   # GPU tests + compiled run
#   PROFILES=live,paper bash bench/flame2video_device.sh carry   # replay check + compiled run
#   PROFILES=live NAME=a TRACE_ARGS="--inductor coordinate_descent_tuning=True" bash bench/flame2video_device.sh trace
#   PROFILES=live SESSIONS=1,2,4,8 bash bench/flame2video_device.sh service   # bench/flame2video_service.py, twice
#     SECONDS_PER=20 drives each session count 20 s (SECONDS_PER=180,20,20,20: one value per count);
#     RUN_LIMIT=S stops each run after S seconds; CACHE_OUT=1 writes the compile cache to $OUT as
#     xz-compressed 15 MiB parts (compile.txz.part*; live's 341 MB cache is 12 MB), CACHE_IN=DIR
#     (carried, e.g. runs/f2v-cache) starts from those parts (what a call carries is limited, 64 MiB
#     with the tree: recompressing the parts where they come back, `cat compile.txz.part* | xz -d |
#     xz -9e | split -b 15M - compile.txz.part`, took live's and hq's 955 MB cache from 47 to 31 MiB,
#     which fits beside the tree and .whl/ where the former did not); the cold compile (404 s for `live`
#     at --max-batch 1 on 2026-12-04, when the first window still had a graph of its own) happens
#     in one call, the restarted-worker runs in the next; SERVICE_ARGS=--inline-conditions draws
#     the FLAME renderings between windows instead of on the conditioning stage; STAGE_WINDOWS=N
#     ends each run with N windows of one session, every stage timed (where a window's time goes);
#     PREPARE=1 compiles the calls first with `flamecast generator --prepare` (PREPARE_LIMIT=S;
#     PREPARE_JOBS=N: --jobs N, one process per batch size; PREPARE_BESIDE="--warm hq --max-batch 1": another
#     --prepare at the same time);
#     QUEUE_DEPTH=4 keeps only the newest 4 due frames a turn, as a worker does (0: every frame);
#     STAGE_BATCHES=1,2,4 times STAGE_WINDOWS batched windows of each of those batch sizes;
#     PROFILE_START=1 profiles a restarted worker's imports and start (importtime.txt, start.prof);
#     FP8="--batch 4" (with RUNS=" ") times batched windows with float8 linear layers against bf16;
#     FP8="--layers --batch 4" times those layers' shapes alone, bf16 against float8
#     (bench/flame2video_fp8.py; torchao's wheel in .whl/)
#   PROFILES=live SA_ARGS="--batch 4" bash bench/flame2video_device.sh short-attention   # the motion and
#     view modules' attention alone, Inductor's products against the Triton kernel (bench/short_attention.py)
# Results go to $OUT (default /tmp/flamecast-bench).
set -u
OUT=${OUT:-/tmp/flamecast-bench}; mkdir -p "$OUT"
MODE=${1:-eager}
# Byte-code, as an installed server has it: this machine's torch environment comes without it and
# its environment sets PYTHONDONTWRITEBYTECODE=1, so every process compiled ~2,300 modules from
# source as it imported them (a restarted worker's imports took 8-14 s on 2026-12-05). The
# byte-code goes to /tmp/pycache instead, compiled once per machine, as pip does at install.
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=/tmp/pycache
if [ ! -f /tmp/pycache/.done ]; then
  t0=$(date +%s)
  python3 -m compileall -q -j 0 $(python3 -c 'import sysconfig as s; print(s.get_paths()["stdlib"], s.get_paths()["purelib"])') \
    >/dev/null 2>&1
  touch /tmp/pycache/.done && echo "byte-code for the torch environment in $(( $(date +%s) - t0 )) s"
fi
if ! PYTHONPATH=/tmp/site python3 -c "import diffusers" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  # byte-compiled once (into /tmp/pycache), as a normal install is: without it every process
  # compiles the carried packages' sources (diffusers' above all) as it imports them; on this
  # project's CPU the pipeline's imports took 9.7 s without any byte-code and 4.6 s with it
  python3 -m compileall -q -j 0 /tmp/site >/dev/null
fi
# flamecast itself, fresh every time (the working tree changes between calls)
rm -rf /tmp/site/flamecast /tmp/site/flamecast-*.dist-info
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target /tmp/site . 2>&1 | grep -v "already exists"
[ -d /tmp/site/flamecast/renderer/flame2video ] || { echo "flamecast did not install"; exit 1; }
# the built-in head's asset folder is not package data of the wheel: copy it beside the package
cp -r renderer/head/assets /tmp/site/flamecast/renderer/head/ 2>/dev/null
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
BENCH="python3 -m flamecast.cli bench --backend flame2video --allow-random-weights --device cuda --no-face-detect"
if [ "$MODE" = eager ]; then
  if [ -z "${SKIP_CHECKS:-}" ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -m pytest -q -x -p no:cacheprovider tests/renderer/test_flame2video_gpu.py 2>&1 | tail -3
    python3 bench/flame2video_check.py --size 256 --json "$OUT/check256.json" 2>&1 | grep -v "should be kept"
  fi
  if [ -f bench/raster.py ]; then python3 bench/raster.py --device cuda --json "$OUT/raster.json" 2>&1 | tail -15; fi
  $BENCH --profile live,hq,paper --warmup 8 --frames 64 --max-seconds 20 --json "$OUT/bench_eager.json" 2>&1 | grep -v "should be kept"
elif [ "$MODE" = final ]; then
  python3 -m pytest -q -x -p no:cacheprovider tests/renderer/test_flame2video_gpu.py 2>&1 | tail -2
  if [ -n "${RASTER:-}" ] && [ -f bench/raster.py ]; then python3 bench/raster.py --device cuda --json "$OUT/raster.json" 2>&1 | tail -15; fi
  $BENCH --profile ${PROFILES:-live,hq,paper} --compile reduce-overhead --eager paper --warmup 24 --frames 96 \
    --max-seconds 20 --json "$OUT/bench_${NAME:-final}.json" 2>&1 | grep -v "should be kept"
elif [ "$MODE" = carry ]; then  # CUDA-graph replay check on the tiny config, then a compiled run
  [ -n "${SKIP_CHECKS:-}" ] || python3 bench/flame2video_carry_check.py --modes ${CARRY_MODES:-cache} --sessions 2 --windows 20 \
    --json "$OUT/carry_check.json" 2>&1 | grep --line-buffered -v "should be kept"
  if [ -n "${PROFILES:-}" ]; then
    $BENCH --profile "$PROFILES" --compile reduce-overhead --eager paper --warmup ${WARMUP:-12} --frames 64 \
      --max-seconds 20 --json "$OUT/bench_${NAME:-carry}.json" 2>&1 | grep --line-buffered -v "should be kept"
  fi
elif [ "$MODE" = service ]; then  # ready time, first frame, 1..N sessions, recompiles: two processes, one cache
  # xz where the machine has it, Python's lzma otherwise
  unxz_() { if command -v xz >/dev/null; then xz -d -T0; else python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer)"; fi; }
  xz_() { if command -v xz >/dev/null; then xz -6 -T0; else python3 -c "import lzma,shutil,sys; shutil.copyfileobj(sys.stdin.buffer, lzma.open(sys.stdout.buffer, 'w'))"; fi; }
  export FLAMECAST_COMPILE_CACHE=${FLAMECAST_COMPILE_CACHE:-/tmp/flamecast-compile}
  # GPU_TESTS=1: the GPU tests first (CUDA graphs, the conditioning stage, compiled calls loaded by
  # a second process), their own compile cache; GPU_TESTS_K=EXPR: only the tests pytest's -k selects
  [ -z "${GPU_TESTS:-}" ] || python3 -m pytest -q -x -p no:cacheprovider -m gpu ${GPU_TESTS_K:+-k "$GPU_TESTS_K"} \
    tests/renderer/test_flame2video_gpu.py tests/renderer/test_flame2video_precompile.py 2>&1 | tail -3
  # a compile cache carried from an earlier call (CACHE_IN=runs/f2v-cache: the parts CACHE_OUT wrote)
  if [ -n "${CACHE_IN:-}" ] && ls "$CACHE_IN"/compile.txz.part* >/dev/null 2>&1; then
    mkdir -p "$FLAMECAST_COMPILE_CACHE" && cat "$CACHE_IN"/compile.txz.part* | unxz_ | tar -xf - -C "$FLAMECAST_COMPILE_CACHE"
    echo "compile cache from $CACHE_IN: $(du -sh "$FLAMECAST_COMPILE_CACHE" | cut -f1)"
    # a cache is kept per torch, Triton, CUDA, diffusers and GPU model (compile_cache.cache_key):
    # one made on an H100 does not serve an H200, and its runs would compile for minutes
    key=$(python3 -c "from flamecast.renderer.flame2video.compile_cache import cache_key; print(cache_key())" 2>/dev/null)
    if [ -z "${PREPARE:-}" ] && [ ! -d "$FLAMECAST_COMPILE_CACHE/$key" ]; then
      echo "the carried cache holds $(ls "$FLAMECAST_COMPILE_CACHE" | tr '\n' ' ')but this machine needs $key" \
        "(another GPU model or library version): add PREPARE=1 to compile first"
      exit 3
    fi
  fi
  # PREPARE=1: compile what the runs serve first, on its own (flamecast generator --prepare), so
  # that every run below is a restarted worker
  if [ -n "${PREPARE:-}" ]; then
    prepare_() {
      timeout ${PREPARE_LIMIT:-100000} python3 -m flamecast.cli generator --prepare --device cuda --compile reduce-overhead \
        --allow-random-weights "$@" 2>&1 | grep --line-buffered -v "should be kept"
      echo "prepare exit ${PIPESTATUS[0]}"
    }
    # PREPARE_BESIDE="--warm hq --max-batch 1": a second --prepare at the same time, printed after
    [ -z "${PREPARE_BESIDE:-}" ] || prepare_ $PREPARE_BESIDE > "$OUT/prepare_beside.txt" &
    prepare_ --warm ${PROFILES:-live} --max-batch ${MAX_BATCH:-4} --jobs ${PREPARE_JOBS:-1}
    wait
    [ -z "${PREPARE_BESIDE:-}" ] || { echo "beside it, $PREPARE_BESIDE:"; cat "$OUT/prepare_beside.txt"; }
  fi
  # PROFILE_START=1: where a restarted worker's start goes: the imports (python -X importtime, the
  # second of two), then one start to ready under cProfile (no sessions), to $OUT
  if [ -n "${PROFILE_START:-}" ]; then
    for i in 1 2; do
      python3 -X importtime -c "import torch; from flamecast.renderer.flame2video.pipeline import FLAME2VideoPipeline" \
        2> "$OUT/importtime.txt"
    done
    timeout ${RUN_LIMIT:-100000} python3 -m cProfile -o "$OUT/start.prof" bench/flame2video_service.py \
      --profile ${PROFILES:-live} --sessions "" --max-batch ${MAX_BATCH:-4} --device cuda --compile reduce-overhead \
      --allow-random-weights --json "$OUT/service_start_profiled.json" 2>&1 | grep --line-buffered -v "should be kept"
    echo "profiled start exit ${PIPESTATUS[0]}"
  fi
  # FP8="--batch 4": bench/flame2video_fp8.py, bf16 against float8 linear layers (torchao, carried in
  # .whl/), once per process of FP8_RUNS (default "1 2")
  if [ -n "${FP8:-}" ]; then
    for run in ${FP8_RUNS:-1 2}; do
      timeout ${RUN_LIMIT:-100000} python3 bench/flame2video_fp8.py --profile ${PROFILES:-live} $FP8 \
        --json "$OUT/fp8_${NAME:-live}_run$run.json" 2>&1 | grep --line-buffered -v "should be kept"
      echo "fp8 run $run exit ${PIPESTATUS[0]}"
    done
  fi
  for run in ${RUNS:-1 2}; do
    T0=$(date +%s.%N) timeout ${RUN_LIMIT:-100000} python3 bench/flame2video_service.py --profile ${PROFILES:-live} \
      --sessions ${SESSIONS:-1,2,4,8} --seconds ${SECONDS_PER:-10} --max-batch ${MAX_BATCH:-4} --deadline ${DEADLINE:-0} \
      --device cuda --compile reduce-overhead --allow-random-weights --stage-windows ${STAGE_WINDOWS:-0} \
      --stage-batches ${STAGE_BATCHES:-1} --queue-depth ${QUEUE_DEPTH:-0} ${SERVICE_ARGS:-} --json "$OUT/service_${NAME:-live}_run$run.json" 2>&1 \
      | grep --line-buffered -v "should be kept"
    echo "run $run exit ${PIPESTATUS[0]}"
  done
  # the cache for the next call: 15 MiB parts under $OUT (each file that comes back is limited)
  if [ -n "${CACHE_OUT:-}" ]; then
    tar -cf - -C "$FLAMECAST_COMPILE_CACHE" . | xz_ | split -b 15M - "$OUT/compile.txz.part"
    ls -la "$OUT"/compile.txz.part* | awk '{s+=$5} END {print "compile cache parts: " NR ", " s/1048576 " MiB"}'
  fi
elif [ "$MODE" = trace ]; then  # where a compiled window's wall time goes (bench/flame2video_trace.py)
  python3 bench/flame2video_trace.py --profile ${PROFILES:-live} --json "$OUT/trace_${NAME:-trace}.json" ${TRACE_ARGS:-} \
    2>&1 | grep --line-buffered -v "should be kept"
elif [ "$MODE" = short-attention ]; then  # the motion and view modules' attention alone, two processes
  nvidia-smi --query-gpu=name --format=csv,noheader
  for run in ${SA_RUNS:-1 2}; do
    python3 bench/short_attention.py --profile ${PROFILES:-live} ${SA_ARGS:-} \
      --json "$OUT/short_attention_${NAME:-sa}_run$run.json" 2>&1 | grep --line-buffered -v "should be kept"
    echo "run $run exit ${PIPESTATUS[0]}"
  done
else
  for c in ${COMPILE_MODES:-default reduce-overhead}; do
    $BENCH --profile ${PROFILES:-live,hq} --compile "$c" --warmup 24 --frames 96 --max-seconds 20 --json "$OUT/bench_compile_$c.json" 2>&1 | grep -v "should be kept"
  done
fi
