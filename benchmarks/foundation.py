"""Foundation numbers: reference costs vs the published totals, import time of
`tdbnas.spaces`, and the speed of the operations search and profiling lean on.

    python benchmarks/foundation.py            # writes benchmarks/results/foundation.{json,md}
"""

from __future__ import annotations

import random
import subprocess
import sys
import time

from tdbnas.spaces import ARCHS, SPACES, ArchSpec, detector_cost, get_reference, get_space
from tdbnas.spaces.costs import __doc__ as COST_CONVENTION

from _common import summary, write_results


def reference_costs() -> tuple[list[dict], str]:
    rows, lines = [], ["| name | MAdds (B) | published | ratio | params (M) | published | ratio |",
                       "|---|---|---|---|---|---|---|"]
    for name in ARCHS.names():
        ref = get_reference(name)
        cost = detector_cost(ref.arch, 320, 90).total
        pub = ref.published
        row = {"name": name, "madds": cost.madds, "params": cost.params,
               "published_madds_b": pub.get("madds_b"), "published_params_m": pub.get("params_m")}
        rows.append(row)
        ratio_m = f"{cost.madds / 1e9 / pub['madds_b']:.3f}" if "madds_b" in pub else "-"
        ratio_p = f"{cost.params / 1e6 / pub['params_m']:.3f}" if "params_m" in pub else "-"
        lines.append(f"| {name} | {cost.madds / 1e9:.3f} | {pub.get('madds_b', '-')} | {ratio_m} | "
                     f"{cost.params / 1e6:.3f} | {pub.get('params_m', '-')} | {ratio_p} |")
    return rows, "\n".join(lines)


def import_time(runs: int = 15) -> dict:
    code = ("import time, sys; t = time.perf_counter(); import tdbnas.spaces; "
            "print(time.perf_counter() - t, int('torch' in sys.modules or 'tensorflow' in sys.modules))")
    samples, frameworks = [], 0
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
        samples.append(float(out[0]))
        frameworks += int(out[1])
    return {**summary(samples), "framework_loaded_in_runs": frameworks}


def rate(fn, seconds: float = 1.0) -> float:
    """Calls per second over about `seconds` (after one warm-up call)."""
    fn()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        count += 1
    return count / (time.perf_counter() - start)


def throughput() -> dict:
    space, rng = get_space("tdb"), random.Random(0)
    text = get_reference("mobiledet-edgetpu").arch.encode()
    genome = space.random_genome(rng)
    arch = space.decode(genome)
    return {
        "parse_per_s": rate(lambda: ArchSpec.parse(text)),
        "encode_per_s": rate(lambda: arch.encode()),
        "sample_per_s": rate(lambda: space.sample(rng)),
        "mutate_per_s": rate(lambda: space.mutate(arch, rng, 0.1)),
        "genome_mutate_per_s": rate(lambda: space.mutate_genome(genome, rng, 0.1)),
        "detector_cost_per_s": rate(lambda: detector_cost(arch, 320, 90)),
    }


def enumeration() -> list[dict]:
    rows = []
    for name in SPACES.names():
        space = get_space(name)
        for resolution in (160, 320):
            start = time.perf_counter()
            count = len(space.layer_configs(resolution))
            rows.append({"space": name, "resolution": resolution, "distinct_layers": count,
                         "size": space.size(), "seconds": time.perf_counter() - start})
    return rows


def main() -> None:
    costs, cost_table = reference_costs()
    imports = import_time()
    speed = throughput()
    layers = enumeration()
    record = {"reference_costs": costs, "import_tdbnas_spaces_s": imports, "throughput": speed,
              "layer_enumeration": layers, "cost_convention": COST_CONVENTION}
    enum_lines = ["| space | resolution | size | distinct layers | enumeration (ms) |", "|---|---|---|---|---|"]
    enum_lines += [f"| {r['space']} | {r['resolution']} | {r['size']:.3g} | {r['distinct_layers']} | "
                   f"{r['seconds'] * 1e3:.1f} |" for r in layers]
    markdown = f"""## Reference detectors at 320x320, 90 COCO classes

{cost_table}

Counting convention (`tdbnas.spaces.costs`):
{COST_CONVENTION.split("Counting convention", 1)[1].split(":", 1)[1]}
## `import tdbnas.spaces` in a fresh interpreter

median {imports['median'] * 1e3:.1f} ms (min {imports['min'] * 1e3:.1f}, max {imports['max'] * 1e3:.1f},
{imports['n']} runs); torch/TensorFlow loaded in {imports['framework_loaded_in_runs']} of them.

## Throughput (single core, calls per second)

""" + "\n".join(f"- {k}: {v:,.0f}" for k, v in speed.items()) + "\n\n## Distinct layer configurations\n\n" \
        + "\n".join(enum_lines)
    json_path, md_path = write_results("foundation", record, markdown)
    print(md_path.read_text())


if __name__ == "__main__":
    main()
