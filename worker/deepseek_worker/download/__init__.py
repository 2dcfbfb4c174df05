"""The model-cache downloader, `deepseek-worker-download` (docs/model-cache.md): job.py (settings,
marker, run, exit codes), hubs.py (Hugging Face and ModelScope through their own clients),
progress.py (the progress document and its ConfigMap). No torch, no web server."""
