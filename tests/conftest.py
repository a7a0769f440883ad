"""End-to-end harness: the real `pulumi` CLI and YAML language host drive the provider
binary against an S3 server and DynamoDB Local on loopback (started by scripts/services.sh).
The S3 server is the Versity S3 gateway, or moto's server with STACKMIGRATE_S3_SERVER=moto.

Each test gets its own Pulumi project directory, stack, buckets and journal."""

import json
import os
import shlex
import subprocess
import time
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

REPO = Path(__file__).resolve().parent.parent
PLUGIN_DIR = Path(os.environ.get("STACKMIGRATE_PLUGIN_DIR", REPO / "target" / "debug"))


def _load_service_env():
    """The environment scripts/services.sh prints, applied to this process."""
    out = subprocess.run(
        [str(REPO / "scripts" / "services.sh"), "start"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for line in out.splitlines():
        if not line.startswith("export "):
            continue
        for assignment in shlex.split(line[len("export "):]):
            key, _, value = assignment.partition("=")
            os.environ[key] = os.path.expandvars(value)
    server = os.environ.get("STACKMIGRATE_S3_SERVER", "versitygw")
    if server == "moto":
        # moto takes any credentials, so each side keeps its own keys.
        os.environ["STACKMIGRATE_S3_A"] = os.environ["AWS_ENDPOINT_URL_S3"] = os.environ["STACKMIGRATE_MOTO_A"]
        os.environ["STACKMIGRATE_S3_B"] = os.environ["STACKMIGRATE_MOTO_B"]
    elif server != "versitygw":
        raise ValueError(f"STACKMIGRATE_S3_SERVER={server!r}: expected versitygw or moto")


def s3_server():
    """The S3 server the tests run against: "versitygw" or "moto"."""
    return os.environ.get("STACKMIGRATE_S3_SERVER", "versitygw")


@pytest.fixture(scope="session", autouse=True)
def services():
    _load_service_env()
    assert (PLUGIN_DIR / "pulumi-resource-stackmigrate").exists(), (
        f"build the provider first: cargo build (looked in {PLUGIN_DIR})"
    )
    yield


def s3_client(side="a"):
    side = side.upper()
    return boto3.client(
        "s3",
        endpoint_url=os.environ[f"STACKMIGRATE_S3_{side}"],
        aws_access_key_id=os.environ[f"STACKMIGRATE_S3_{side}_KEY"],
        aws_secret_access_key=os.environ[f"STACKMIGRATE_S3_{side}_SECRET"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=32),
    )


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def listing(s3, bucket):
    """Key -> (size, etag) of every object in a bucket."""
    objects = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            objects[obj["Key"]] = (obj["Size"], obj["ETag"])
    return objects


def connection(side):
    side = side.upper()
    return {
        "endpoint": os.environ[f"STACKMIGRATE_S3_{side}"],
        "accessKeyId": os.environ[f"STACKMIGRATE_S3_{side}_KEY"],
        "secretAccessKey": os.environ[f"STACKMIGRATE_S3_{side}_SECRET"],
        "region": "us-east-1",
        "forcePathStyle": True,
    }


def both_sides():
    """Provider config with one connection for both sides: S3 "a" and DynamoDB Local."""
    both = {**connection("a"), "dynamodbEndpoint": os.environ["STACKMIGRATE_DYNAMODB"]}
    return {"stackmigrate:source": both, "stackmigrate:target": both}


class PulumiError(AssertionError):
    pass


class Project:
    """A Pulumi YAML project in its own directory with one stack."""

    def __init__(self, root: Path, resources: dict, outputs=None, config=None, variables=None):
        self.dir = root
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stack = unique("s")
        self.name = unique("p")
        self.journal_dir = root / "journal"
        self.config = {
            "stackmigrate:source": connection("a"),
            "stackmigrate:target": connection("a"),
            "stackmigrate:journal": f"file://{self.journal_dir}",
        }
        self.config.update(config or {})
        self.variables = variables or {}
        self.write(resources, outputs or {})
        self._pulumi("stack", "init", self.stack)

    def write(self, resources: dict, outputs: dict):
        """(Re)writes the program; JSON is YAML, so no YAML library is needed."""
        project = {
            "name": self.name,
            "runtime": "yaml",
            "plugins": {"providers": [{"name": "stackmigrate", "path": str(PLUGIN_DIR)}]},
            "variables": self.variables,
            "resources": resources,
            "outputs": outputs,
        }
        (self.dir / "Pulumi.yaml").write_text(json.dumps(project, indent=2))
        (self.dir / f"Pulumi.{self.stack}.yaml").write_text(json.dumps({"config": self.config}, indent=2))

    def set_config(self, key, value, secret=False):
        flags = ["--secret"] if secret else []
        self.run("config", "set", "--path", *flags, key, value)

    def run(self, *args, check=True, timeout=600):
        """Runs a pulumi command on this project's stack."""
        return self._pulumi(*args, "--stack", self.stack, check=check, timeout=timeout)

    def _pulumi(self, *args, check=True, timeout=600):
        proc = subprocess.run(
            ["pulumi", *args, "--non-interactive", "--cwd", str(self.dir)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        output = proc.stdout + proc.stderr
        if check and proc.returncode != 0:
            raise PulumiError(f"pulumi {' '.join(args)} failed ({proc.returncode}):\n{output}")
        return output if check else (proc.returncode, output)

    def preview(self, check=True):
        # --debug: the machine counts (`plan: key=value`) besides the plan in words.
        return self.run("preview", "--diff", "--debug", check=check)

    def up(self, check=True):
        return self.run("up", "--yes", "--skip-preview", check=check)

    def destroy(self, check=True):
        return self.run("destroy", "--yes", "--skip-preview", check=check)

    def outputs(self):
        return json.loads(self.run("stack", "output", "--json", "--show-secrets"))

    def state_text(self):
        return self.run("stack", "export")

    def up_in_background(self):
        return subprocess.Popen(
            ["pulumi", "up", "--yes", "--skip-preview", "--non-interactive", "--cwd", str(self.dir), "--stack", self.stack],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )


def provider_usage(parent_pid, stop, usage):
    """Polls the provider (a child of pulumi) for its high-water mark in KiB and the CPU
    seconds it has used (summed over providers, if pulumi starts more than one). pgrep runs
    only until the provider is found (pulumi may start it more than once), so the
    polling itself takes little of the CPU the copy competes for."""
    pid, earlier_cpu = None, 0.0
    while not stop.is_set():
        if pid is None:
            found = subprocess.run(["pgrep", "-P", str(parent_pid), "-f", "pulumi-resource-stackmigrate"],
                                   capture_output=True, text=True).stdout.split()
            pid = found[0] if found else None
        if pid is not None:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        usage["peak"] = max(usage["peak"], int(line.split()[1]))
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                usage["cpu"] = earlier_cpu + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except OSError:
                pid, earlier_cpu = None, usage["cpu"]
        time.sleep(0.05)


def plan_counts(output):
    """The counts of the first `plan:` line a preview printed (at debug level)."""
    for line in output.splitlines():
        if " plan: " in line or line.strip().startswith("plan: "):
            fields = line.split("plan:", 1)[1].split()
            return {k: int(v) for k, v in (f.split("=") for f in fields)}
    raise AssertionError(f"no plan line in:\n{output}")


def plan_by(output, name):
    """Per-entry plan lines (`plan countsByType RECEIPT: copied=2 ...`) of a preview."""
    entries = {}
    for line in output.splitlines():
        marker = f"plan {name} "
        if marker in line:
            entry, _, fields = line.split(marker, 1)[1].partition(": ")
            entries[entry] = {k: int(v) for k, v in (f.split("=") for f in fields.split())}
    return entries


def wait_until(predicate, timeout=60, interval=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


@pytest.fixture
def project(tmp_path):
    made = []

    def make(resources, outputs=None, config=None, variables=None):
        p = Project(tmp_path / f"project{len(made)}", resources, outputs, config, variables)
        made.append(p)
        return p

    yield make
