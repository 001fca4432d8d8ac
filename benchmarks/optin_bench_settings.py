"""Settings of the benchmark's server only: production settings, plus the baseline view
(benchmarks/optin_bench_urls.py). Never imported by the site itself."""

from config.settings.production import *  # noqa: F403

ROOT_URLCONF = "optin_bench_urls"
