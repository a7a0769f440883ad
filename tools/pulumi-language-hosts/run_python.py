# Runs a Pulumi Python program for pulumi-language-python (stackmigrate's language
# host): configures the SDK's runtime from the engine's arguments and environment, then
# executes the program directory's __main__.py inside the stack.
import argparse
import asyncio
import os
import runpy
import sys
import traceback

import pulumi
import pulumi.runtime

LOGGED = 32  # the exit code that tells the host the error has been reported already

ap = argparse.ArgumentParser()
for flag in ("monitor", "engine", "project", "stack", "organization", "root_directory", "pwd", "parallel"):
    ap.add_argument(f"--{flag}")
ap.add_argument("--dry_run", action="store_true")
ap.add_argument("program")
ap.add_argument("args", nargs="*")
args = ap.parse_args()

pulumi.runtime.set_all_config(pulumi.runtime.get_config_env(), pulumi.runtime.get_config_secret_keys_env())
pulumi.runtime.configure(
    pulumi.runtime.Settings(
        monitor=args.monitor,
        engine=args.engine,
        project=args.project,
        stack=args.stack,
        parallel=int(args.parallel or 0),
        dry_run=args.dry_run,
        organization=args.organization,
        root_directory=args.root_directory,
    )
)
if args.pwd:
    os.chdir(args.pwd)
program = os.path.abspath(args.program)
sys.argv = [program, *args.args]

loop = asyncio.new_event_loop()
asyncio.set_event_loop(loop)
code = 1
try:
    loop.run_until_complete(pulumi.runtime.run_in_stack(lambda: runpy.run_path(program, run_name="__main__")))
    code = 0
except pulumi.RunError as e:
    pulumi.log.error(str(e))
    code = LOGGED
except Exception:
    pulumi.log.error("Program failed with an unhandled exception:\n" + traceback.format_exc())
    code = LOGGED
finally:
    loop.close()
    sys.stdout.flush()
    sys.stderr.flush()
sys.exit(code)
