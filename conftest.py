"""nbval: compare text outputs but not stderr (tqdm bars and library warnings churn there)."""


def pytest_collectstart(collector):
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("stderr",)
