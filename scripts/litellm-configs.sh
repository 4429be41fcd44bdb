#!/usr/bin/env bash
# Loads every example config shipped inside the litellm wheel with `memproxy check-config`
# and prints each one's outcome: loaded (deployments served / skipped / unsupported) or
# refused (and why). Every `os.environ/NAME` a config references gets a placeholder value,
# as a user would have set it.
#
#   bash scripts/litellm-configs.sh            # the newest litellm on PyPI
#   LITELLM_VERSION=1.109.0 bash scripts/litellm-configs.sh
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
spec=litellm${LITELLM_VERSION:+==$LITELLM_VERSION}
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$WORK" "$spec"
cargo build --quiet --locked --bin memproxy
BIN=${CARGO_TARGET_DIR:-target}/debug/memproxy

python3 - "$WORK" "$BIN" <<'PY'
import glob, os, re, subprocess, sys, zipfile
work, binary = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(work, "litellm-*.whl"))[0]
z = zipfile.ZipFile(wheel)
names = sorted(n for n in z.namelist()
               if n.startswith("litellm/proxy/example_config_yaml/") and n.endswith((".yaml", ".yml")))
print(f"{os.path.basename(wheel)}: {len(names)} example configs")
loaded = 0
for n in names:
    path = os.path.join(work, os.path.basename(n))
    text = z.read(n).decode()
    open(path, "w").write(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LITELLM_", "PROXY_"))}
    for var in set(re.findall(r"os\.environ/([A-Za-z_][A-Za-z0-9_]*)", text)):
        env.setdefault(var, "https://example.invalid" if var.endswith(("BASE", "ENDPOINT", "URL")) else "placeholder")
    out = subprocess.run([binary, "check-config", path], env=env, capture_output=True, text=True)
    lines = out.stderr.splitlines()
    count = lambda p: sum(1 for l in lines if l.startswith(p))
    name = os.path.basename(n)
    if out.returncode == 0:
        loaded += 1
        print(f"  loaded   {name}: {count('served:')} served, {count('skipped:')} skipped, "
              f"{count('unsupported:')} unsupported")
        for l in lines:
            if l.startswith(("skipped:", "unsupported:")):
                print(f"             {l}")
    else:
        err = next((l for l in lines if l.startswith("error:")), out.stderr.strip()[-300:])
        print(f"  REFUSED  {name}: {err}")
print(f"{loaded} of {len(names)} loaded")
PY
