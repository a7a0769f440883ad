"""Times one `pulumi up` of a fresh stack with the provider's peak RSS: shared by the
benchmark scripts."""

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def provider_peak_rss(parent_pid, stop, peak):
    """Polls the provider (a child of pulumi) for its high-water mark, in KiB. pgrep runs
    only until the provider is found (pulumi may start it more than once), so the
    polling itself takes little of the CPU the copy competes for."""
    pid = None
    while not stop.is_set():
        if pid is None:
            found = subprocess.run(["pgrep", "-P", str(parent_pid), "-f", "pulumi-resource-stackmigrate"],
                                   capture_output=True, text=True).stdout.split()
            pid = found[0] if found else None
        if pid is not None:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak[0] = max(peak[0], int(line.split()[1]))
            except OSError:
                pid = None
        time.sleep(0.05)


def timed_up(resources, config, plugin_dir):
    """Seconds of one `pulumi up` of a fresh stack, and the provider's peak RSS in KiB."""
    with tempfile.TemporaryDirectory() as work:
        name = f"bench-{int(time.time() * 1000)}"
        project = {"name": name, "runtime": "yaml", "resources": resources,
                   "plugins": {"providers": [{"name": "stackmigrate", "path": str(Path(plugin_dir).resolve())}]}}
        Path(work, "Pulumi.yaml").write_text(json.dumps(project))
        Path(work, "Pulumi.bench.yaml").write_text(json.dumps({"config": {**config, "stackmigrate:journal": f"file://{work}/journal"}}))
        subprocess.run(["pulumi", "stack", "init", "bench", "--non-interactive", "--cwd", work], check=True, capture_output=True)
        started = time.monotonic()
        up = subprocess.Popen(["pulumi", "up", "--yes", "--skip-preview", "--non-interactive", "--cwd", work],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        stop, peak = threading.Event(), [0]
        watcher = threading.Thread(target=provider_peak_rss, args=(up.pid, stop, peak))
        watcher.start()
        out, _ = up.communicate()
        seconds = time.monotonic() - started
        stop.set()
        watcher.join()
        if up.returncode != 0:
            sys.exit(out)
        return seconds, peak[0]
