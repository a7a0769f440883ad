"""The README's first command, scripts/demo.sh, end to end on the running services (a
small dev side): the whole runbook in one up, a second up with nothing to do, and the
rollback preview. The stack is destroyed afterwards, which must restore prod."""

import os
import subprocess

from conftest import REPO


def test_the_demo_runs_the_whole_runbook():
    env = {**os.environ, "STACKMIGRATE_DEMO_ARGS": "--images 3 --lines 4 --words 3"}
    proc = subprocess.run([str(REPO / "scripts" / "demo.sh")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1200)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    preview, up, again, rollback = (out.split("== pulumi ")[i] for i in (1, 2, 3, 4))
    assert "queue embedding-line-prod-dlq: 0 visible, 0 in flight (dead-letter queue, empty)" in preview, preview
    assert "would start arn:aws:states:" in preview and "would invalidate" in preview, preview
    assert "groups: " in preview and " added" in preview, preview
    assert "done and verified" in up and "started execution stackmigrate-" in up, up
    assert "invalidation " in up and " paths on distribution " in up, up
    assert "1 updated" in again and "9 unchanged" in again, again
    assert "10 to delete" in rollback, rollback

    work = os.path.join(os.environ.get("STACKMIGRATE_RUN", "/tmp/stackmigrate-services"), "demo", "migration")
    destroyed = subprocess.run(["pulumi", "destroy", "--yes", "--skip-preview", "--non-interactive",
                                "--stack", "organization/portfolio-migration/prod"],
                               cwd=work, capture_output=True, text=True, timeout=600)
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
