#!/usr/bin/env python
"""What only a GPU can show, in one run (driven by `scripts/device_check.sh`, < 8 minutes on one H100).

1. Embedding: the full-size ClapModel (`ClapConfig()` sizes, random weights) on generated 10 s clips,
   through `curator ingest` + `curator embed` (decoding on worker threads, bf16 on CUDA), against
   the Hugging Face path a user would write (soundfile + resample + ClapFeatureExtractor + ClapModel).
2. Matching at the papers' scale (1.9 M clips x 128 k captions x 1024-d): store -> candidates end to
   end with `curator match` (bf16 block products + fp32/float64 re-check), then the same run in fp32,
   and the number of (caption, clip) decisions that differ between the two (must be 0).
3. Training: samples/s of the full-size clap-hf student in bf16, GPU utilisation sampled with nvidia-smi.

`--cpu --tiny` runs the same code paths at toy sizes on the CPU (the test suite does this so the
script never rots); its figures say nothing about a GPU.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "scripts", ROOT / "tests"):
    sys.path.insert(0, str(p))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SIZES = {  # full: the papers' scale on one H100; tiny: the same paths in seconds on a CPU
    "full": {"clips": 64, "clip_s": 10.0, "batch": 32, "pool": 1_900_000, "captions": 128_000, "dim": 1024,
             "pass": 1e-4, "train_batch": 32, "train_steps": 20},
    "tiny": {"clips": 8, "clip_s": 1.5, "batch": 4, "pool": 20_000, "captions": 500, "dim": 64,
             "pass": 1e-3, "train_batch": 4, "train_steps": 3},
}


def curator(store: str, *args) -> str:
    """Run a `curator` command in this process (as typed, minus the start-up); return what it printed."""
    import contextlib
    import io

    from curator.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            main(["--store", store, *map(str, args)])
        except SystemExit as exc:
            if exc.code:
                raise SystemExit(f"curator {' '.join(map(str, args))} failed ({exc.code}):\n{buf.getvalue()[-2000:]}")
    return buf.getvalue()


class GpuSampler:
    """nvidia-smi utilisation and memory every 200 ms while active (nothing on a machine without it)."""

    def __init__(self):
        self.proc, self.file = None, None

    def __enter__(self):
        if shutil.which("nvidia-smi"):
            self.file = tempfile.NamedTemporaryFile("w+", suffix=".csv", delete=False)
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                          "--format=csv,noheader,nounits", "-lms", "200"], stdout=self.file)
        return self

    def __exit__(self, *exc):
        if self.proc:
            self.proc.terminate()
            self.proc.wait()

    def summary(self) -> dict:
        if not self.file:
            return {"gpu_util_mean": None, "gpu_util_max": None, "gpu_mem_max_mb": None, "samples": 0}
        rows = [ln.split(",") for ln in Path(self.file.name).read_text().splitlines() if ln.count(",") == 1]
        util = [float(u) for u, _ in rows]
        mem = [float(m) for _, m in rows]
        return {"gpu_util_mean": float(np.mean(util)) if util else None, "gpu_util_max": max(util, default=None),
                "gpu_mem_max_mb": max(mem, default=None), "samples": len(util)}


def check_embed(s: dict, device: str, work: Path) -> dict:
    from bench_embed import hf_end_to_end, make_full_size, write_clips
    from tiny_models import make_tiny_clap

    folder = make_tiny_clap(work / "model") if s["clips"] <= 8 else make_full_size(work / "model")
    (work / "clips").mkdir()
    write_clips(work / "clips", s["clips"], s["clip_s"], 44100)
    store = str(work / "embed_store")
    curator(store, "ingest", "audio", work / "clips", "--source", "gen")
    curator(store, "models", "add", "clap", "--kind", "clap-hf", folder)
    t0 = time.perf_counter()
    curator(store, "embed", "--model", "clap", "--audio", "--device", device, "--batch-size", s["batch"],
            "--workers", 4, *(["--bf16"] if device.startswith("cuda") else []))
    ours = s["clips"] / (time.perf_counter() - t0)  # includes loading the model, as a user's run does
    hf = hf_end_to_end(folder, sorted(str(p) for p in (work / "clips").glob("*.wav")), s["batch"], device)
    return {"clips": s["clips"], "clip_s": s["clip_s"], "ours_clips_per_s": ours, "hf_clips_per_s": hf}


def check_match(s: dict, device: str, work: Path) -> dict:
    from curator.demo.vectors import clustered, write_model
    from curator.store.store import Store

    store = Store.open(str(work / "match_store"))
    t0 = time.perf_counter()
    audio = clustered(s["pool"], s["dim"], n_clusters=200, seed=1)
    text = clustered(s["captions"], s["dim"], n_clusters=200, seed=2)
    sample = text[:500] @ audio[:50_000].T
    tau = round(float(np.quantile(sample, 1 - s["pass"])), 4)
    write_model(store, "paper", text, audio)
    del audio, text, sample
    setup_s = time.perf_counter() - t0
    out = {"pool": s["pool"], "captions": s["captions"], "dim": s["dim"], "tau": tau, "setup_s": setup_s}
    for precision in ("bf16", "fp32"):
        t0 = time.perf_counter()
        with GpuSampler() as gpu:
            text_out = curator(store.uri, "match", "--model", "paper", "--threshold", tau, "--device", device,
                               "--precision", precision, "--run", precision, "--format", "json")
        out[precision] = {"seconds": time.perf_counter() - t0, "pairs": json.loads(text_out)[0]["pairs"],
                          **gpu.summary()}
    diff = curator(store.uri, "query", "select count(*) as n from ((select text_id, audio_id from candidates where "
                   "run_id = 'bf16' except select text_id, audio_id from candidates where run_id = 'fp32') union all "
                   "(select text_id, audio_id from candidates where run_id = 'fp32' except select text_id, audio_id "
                   "from candidates where run_id = 'bf16'))", "--format", "json")
    out["decisions_differing"] = int(json.loads(diff)[0]["n"])
    return out


def check_train(s: dict, device: str, work: Path) -> dict:
    from bench_train import TINY, make_clap_folder, time_train_steps

    from trainer.students.loading import build_student

    torch.manual_seed(0)
    student = (build_student("compact", **TINY) if s["train_batch"] <= 4
               else build_student("clap-hf", make_clap_folder(work / "student")))
    with GpuSampler() as gpu:
        r = time_train_steps(student, s["train_batch"], s["train_steps"], torch.device(device), warmup=2)
    return {**{k: r[k] for k in ("batch", "steps", "samples_per_s", "step_s", "params_m")}, **gpu.summary(),
            "precision": "bf16 autocast" if device.startswith("cuda") else "fp32 (CPU)"}


def render(res: dict) -> str:
    e, m, t = res["embed"], res["match"], res["train"]
    mode = "" if res["size"] == "full" else (
        " **`--cpu --tiny` mode: toy sizes on the CPU, run by the test suite to keep the script working; these "
        "figures say nothing about a GPU.**")

    def util(r):
        return "n/a" if r["gpu_util_mean"] is None else f"{r['gpu_util_mean']:.0f} % mean, {r['gpu_util_max']:.0f} % max"

    mem = "n/a" if t["gpu_mem_max_mb"] is None else f"{t['gpu_mem_max_mb']:.0f} MB"

    lines = [
        "## GPU check (`scripts/device_check.sh`)", "",
        f"Device: {res['device_name']}; torch {res['torch']}; {res['when']}; total {res['total_s']:.0f} s.{mode}", "",
        "| check | ours | alternative / reference | note |", "|---|---|---|---|",
        f"| embed {e['clips']} generated {e['clip_s']:g} s clips (`curator embed`, decode on 4 workers"
        f"{', bf16' if res['device'] != 'cpu' else ''}) | {e['ours_clips_per_s']:.1f} clips/s (incl. model load) | HF extractor path {e['hf_clips_per_s']:.1f} clips/s | "
        f"{e['ours_clips_per_s'] / e['hf_clips_per_s']:.2f}x |",
        f"| match {m['pool']:,} clips x {m['captions']:,} captions x {m['dim']}-d, store -> candidates, bf16 + "
        f"re-check | {m['bf16']['seconds']:.1f} s, {m['bf16']['pairs']:,} pairs, GPU {util(m['bf16'])} | fp32 "
        f"{m['fp32']['seconds']:.1f} s, {m['fp32']['pairs']:,} pairs | decisions differing from fp32: "
        f"**{m['decisions_differing']}** (must be 0); tau {m['tau']} |",
        f"| train {t['params_m']:.0f} M-param student, batch {t['batch']}, {t['precision']} | "
        f"{t['samples_per_s']:.1f} samples/s ({t['step_s']:.2f} s/step) | GPU {util(t)}, "
        f"{mem} peak memory | {t['steps']} timed steps |",
        "",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="run on the CPU (with --tiny: the test suite's mode)")
    ap.add_argument("--tiny", action="store_true", help="toy sizes")
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "gpu.md"))
    ap.add_argument("--json", default=None)
    ap.add_argument("--only", choices=["embed", "match", "train"], action="append", help="run only these checks")
    a = ap.parse_args()
    device = "cpu" if a.cpu else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device; pass --cpu --tiny to run the checks' code paths on the CPU", file=sys.stderr)
        return 2
    s = SIZES["tiny" if a.tiny else "full"]
    t0 = time.perf_counter()
    res = {"device": device, "size": "tiny" if a.tiny else "full", "torch": torch.__version__,
           "device_name": torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({os.cpu_count()} cores)",
           "when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    with tempfile.TemporaryDirectory(prefix="device_check_") as tmp:
        for name, fn in (("embed", check_embed), ("match", check_match), ("train", check_train)):
            if a.only and name not in a.only:
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {name}", flush=True)
            (Path(tmp) / name).mkdir()
            res[name] = fn(s, device, Path(tmp) / name)
            print("    " + json.dumps(res[name]), flush=True)
    res["total_s"] = time.perf_counter() - t0
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    if not a.only:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(render(res))
        print(render(res))
    return 1 if res.get("match", {}).get("decisions_differing") else 0


if __name__ == "__main__":
    raise SystemExit(main())
