"""The data-path benchmark's pieces; `benchmarks/bench_datapath.py` is the entry point (`make bench`).

- `paths`: the two data paths (torchvision + DataLoader, ours) and the data they serve;
- `timing`: the timings, the paths interleaved, the data-only and training measurements;
- `mlflow_cost`: the cost of the per-epoch MLflow logging;
- `report`: the machine and versions, and the Markdown report.
"""
