"""The benchmarks' pieces; `benchmarks/bench_datapath.py` (`make bench`) and `benchmarks/bench_throughput.py`
are the entry points.

- `paths`: the two data paths (torchvision + DataLoader, ours) and the data they serve;
- `timing`: the timings, the paths interleaved, the data-only and training measurements;
- `mlflow_cost`: the cost of the per-epoch MLflow logging;
- `report`: the data-path benchmark's Markdown report;
- `machine`: the machine and versions (no MLflow: the GPU machines have none);
- `markdown`: tables;
- `throughput`: the throughput benchmark's measurements (a budget of steps, the plain loop, ours, the peak).
"""
