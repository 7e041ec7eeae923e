"""What the golden-making scripts share: a fresh output folder, and mergekit-yaml run on
one config."""
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fresh_set(out):
    """Empties `out` and makes its `configs/` and `models/` folders; returns `models/`."""
    shutil.rmtree(out, ignore_errors=True)
    models = os.path.join(out, "models")
    os.makedirs(os.path.join(out, "configs"))
    os.makedirs(models)
    return models


def mergekit(config, out, cwd, *flags):
    """Runs this virtualenv's mergekit-yaml on `config` into `out` in `cwd`; returns the
    completed process (output captured, not checked)."""
    mergekit_yaml = os.path.join(os.path.dirname(sys.executable), "mergekit-yaml")
    return subprocess.run(
        [mergekit_yaml, config, out, "--no-write-model-card", "--quiet", *flags],
        cwd=cwd, capture_output=True, text=True,
    )


def check(run):
    """Raises with mergekit's own error output if it failed."""
    if run.returncode != 0:
        sys.stderr.write(run.stderr)
        raise SystemExit(f"mergekit-yaml failed ({run.returncode})")
