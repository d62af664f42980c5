"""`tito bench`: loops vs fast path vs PyTorch CPU, forward+backward per layer and for SimpleCNN,
and digits training ours vs PyTorch with the same model, weights, batches and schedule.
Each side runs in its own process with one thread (see benchmarks/run.py)."""
import json
import os
import subprocess
import sys


def register(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="loops vs fast vs PyTorch CPU, as ratios; digits training vs PyTorch")
    bench.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                       help="digits training seeds, each run on both sides (default 0 1 2)")
    bench.add_argument("--epochs", type=int, default=60, help="digits training epochs (default 60)")
    bench.add_argument("--rounds", type=int, default=2,
                       help="layer timings: alternate ours/PyTorch processes this many times, keep each best")
    bench.add_argument("--skip-layers", action="store_true", help="only the digits training")
    bench.add_argument("--skip-digits", action="store_true", help="only the layer timings")
    bench.add_argument("--loops-training", action="store_true",
                       help="also train the digits model with impl='loops' (about 3 minutes of CPU)")
    bench.add_argument("--loops-epochs", type=int, default=3)
    bench.add_argument("--keep-openblas-env", action="store_true",
                       help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE from the environment (default: unset them "
                            "in the benchmark processes, so OpenBLAS picks its kernels for this CPU as it does elsewhere)")
    bench.set_defaults(handler=run_bench)


# Which OpenBLAS overrides exist, and unsetting them, is benchmarks/run.py's business (`openblas=own`,
# before NumPy loads OpenBLAS); each result says which were set and whether they were kept.
KEEP_OPENBLAS_ENV = False


def run_side(root, *arguments) -> dict:
    "One benchmark side in a fresh single-threaded process; its JSON result."
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    arguments = arguments + (() if KEEP_OPENBLAS_ENV else ("openblas=own",))
    result = subprocess.run([sys.executable, str(root / "benchmarks" / "run.py"), *arguments],
                            capture_output=True, text=True, env=env, cwd=root)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark {' '.join(arguments)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def best_of_rounds(root, rounds: int) -> tuple:
    "Alternate the two sides so that a burst of load elsewhere hits both; keep each entry's best."
    ours, theirs = {}, {}
    for _ in range(max(rounds, 1)):
        for side, best in (("ours", ours), ("torch", theirs)):
            result = run_side(root, "layers", side)
            best["blas"] = result.pop("blas", "unknown")
            best["layout"] = result.pop("layout")
            best["openblas_env"] = result.pop("openblas_env")
            for name, row in result.items():
                kept = best.setdefault(name, dict(row))
                for key, value in row.items():
                    kept[key] = min(kept[key], value)
    return ours, theirs


def layer_table(ours: dict, theirs: dict) -> str:
    "The rows of both sides; their shapes come from benchmarks/run.py's own output (its `layout`)."
    layout = ours["layout"]
    shapes, FUSED = layout["shapes"], layout["fused"]
    theirs = dict(theirs, **{FUSED: theirs[layout["simplecnn"]]})
    size = lambda shape: "×".join(map(str, shape))
    header = (f"{'forward+backward':<20} {'input':<14} {'fast ms':>8} {'torch ms':>9} {'fast/torch':>10}   "
              f"{'small input':<12} {'loops ms':>9} {'fast ms':>8} {'loops/fast':>10}")
    lines = [header, "-" * len(header)]
    rows = [name for name in ours if name not in ("blas", "layout", "openblas_env")]
    order = [name for name in rows if name != FUSED] + [FUSED]   # the extra last, under SimpleCNN
    for name in (n for n in order if n in rows):
        row = ours[name]
        shape, small = shapes[name]
        torch_ms = theirs[name]["torch_ms"]
        line = (f"{name:<20} {size(shape):<14} {row['fast_ms']:8.2f} {torch_ms:9.2f} "
                f"{row['fast_ms'] / torch_ms:9.2f}×   ")
        if "loops_small_ms" in row:
            line += (f"{size(small):<12} {row['loops_small_ms']:9.1f} {row['fast_small_ms']:8.3f} "
                     f"{row['loops_small_ms'] / row['fast_small_ms']:9.0f}×")
        lines.append(line.rstrip())
    return "\n".join(lines)


def _root():
    from tito.paths import project_root
    return project_root()


def run_bench(args) -> int:
    import numpy as np
    global KEEP_OPENBLAS_ENV
    KEEP_OPENBLAS_ENV = args.keep_openblas_env
    root = _root()
    print("tito bench: float32, one thread, each side in its own process; times are CPU time of that process\n"
          "(best of repeated runs), so that other work on a shared machine does not count\n")
    if not args.skip_layers:
        ours, theirs = best_of_rounds(root, args.rounds)
        print(layer_table(ours, theirs))
        kept = ours["openblas_env"]["set"]
        print(f"(BLAS: ours {ours['blas']}, torch {theirs['blas']}; "
              + (f"kept {kept} from the environment" if KEEP_OPENBLAS_ENV and kept else
                 f"unset {kept} for both sides" if kept else "no OpenBLAS overrides set") + ")")
        print("(loops are timed on the small input only; SimpleCNN's small input is 16×16 images)\n")
    if not args.skip_digits:
        from tito.commands.training import DEFAULTS
        print(f"digits training: SimpleCNN(1, 10, 16) on the digits upsampled to 16×16, Adam lr 3e-3, cosine, {args.epochs} epochs, "
              f"batch {DEFAULTS['digits']['batch_size']}, ±1-pixel shifts; both sides start from the same weights "
              "and see the same batches")
        header = f"{'seed':>4} {'ours acc':>9} {'ours s':>7} {'torch acc':>10} {'torch s':>8} {'ours/torch time':>16}"
        print("(seconds: CPU time of the whole run, training and final evaluation)")
        print(header + "\n" + "-" * len(header))
        rows = []
        for seed in args.seeds:
            options = (f"epochs={args.epochs}", f"seed={seed}")
            mine, reference = run_side(root, "digits", "ours", *options), run_side(root, "digits", "torch", *options)
            rows.append((mine["accuracy"], mine["seconds"], reference["accuracy"], reference["seconds"]))
            print(f"{seed:>4} {mine['accuracy']:9.2%} {mine['seconds']:7.2f} {reference['accuracy']:10.2%} "
                  f"{reference['seconds']:8.2f} {mine['seconds'] / reference['seconds']:15.2f}×")
        mean = np.mean(rows, axis=0)
        print(f"{'mean':>4} {mean[0]:9.2%} {mean[1]:7.2f} {mean[2]:10.2%} {mean[3]:8.2f} {mean[1] / mean[3]:15.2f}×\n")
    if args.loops_training:
        result = run_side(root, "digits-loops", f"epochs={args.loops_epochs}")
        print(f"digits training with impl='loops' (your Module 09 code), SimpleCNN(1, 10, 8) on the 8×8 digits: {result['epochs']} epochs on "
              f"{result['train_images']} images, batch {result['batch_size']}, Adam lr {result['lr']:g}, cosine, "
              f"no shifts: test accuracy {result['accuracy']:.2%} "
              f"in {result['seconds']:.0f} s wall clock ({result['cpu_seconds']:.0f} s CPU), final evaluation included")
    return 0
