#!/usr/bin/env bash
# The training benchmark on a GPU machine without TensorFlow: cervixnet's paper-size joint
# U-Net on Keras with the JAX backend next to the PyTorch peer, in one run.
#   KERAS_BACKEND=jax bash benchmarks/gpu_training.sh RESULTS_DIR
set -u
out=${1:-gpu_results}
mkdir -p "$out"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
export KERAS_BACKEND=jax
here=$(dirname "$0")
python3 "$here/training_throughput.py" --model paper --device cuda --batch 256 --steps 20 \
  --case-timeout 200 --out "$out/training_gpu_256.json" \
  --cases keras:mixed_bfloat16 torch:bfloat16:cl torch:bfloat16:cl:compile
python3 "$here/training_throughput.py" --model paper --device cuda --batch 64 --steps 20 \
  --case-timeout 150 --out "$out/training_gpu_64.json" \
  --cases keras:mixed_bfloat16 torch:bfloat16:cl keras:float32
