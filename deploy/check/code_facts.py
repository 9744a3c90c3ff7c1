"""What the manifests must agree with, read from the Rust sources (no cargo): each service's
environment variables, default port and the drain grace period's default.
"""

import os
import re

# Deployment name -> the source folders its binary is built from.
SOURCES = {
    "analyzer": ["common/src", "analyzer-svc/src"],
    "editor": ["common/src", "editor-svc/src"],
    "trainer": ["common/src", "trainer-svc/src"],
    "gateway": ["common/src", "gateway/src"],
}
# Where the default ports are written, once (`arf_proto::default_ports`), and each
# deployment's constant there.
PORTS_SOURCE = "proto/src/lib.rs"
PORT_CONSTANTS = {
    "analyzer": "ANALYZER",
    "editor": "EDITOR",
    "trainer": "TRAINER",
    "gateway": "PIPELINE",
}
# Deployment name -> the source that passes that constant to run_binary.
PORT_USERS = {
    "analyzer": "analyzer-svc/src/serve.rs",
    "editor": "editor-svc/src/serve.rs",
    "trainer": "trainer-svc/src/serve.rs",
    "gateway": "gateway/src/server.rs",
}
ENV_READ = re.compile(r'env\s*=\s*"([A-Z][A-Z0-9_]*)"|env::var(?:_os)?\(\s*"([A-Z][A-Z0-9_]*)"')
GRACE = re.compile(r'env\s*=\s*"ARF_SHUTDOWN_GRACE_SECS",\s*default_value_t\s*=\s*(\d+)')


def _rust_files(root, folder):
    for dirpath, _, names in os.walk(os.path.join(root, folder)):
        for n in names:
            if n.endswith(".rs"):
                yield os.path.join(dirpath, n)


def env_vars(root, deployment):
    """Every environment variable the service's code declares (clap `env = ...`) or reads."""
    found = set()
    for folder in SOURCES[deployment]:
        for path in _rust_files(root, folder):
            with open(path, encoding="utf-8") as f:
                for m in ENV_READ.finditer(f.read()):
                    found.add(m.group(1) or m.group(2))
    return found


def mentions(root, deployment, text):
    """Whether the service's own sources (not common/) contain `text`."""
    return any(text in open(path, encoding="utf-8").read()
               for path in _rust_files(root, SOURCES[deployment][-1]))


def default_port(root, deployment):
    """The port the service listens on by default: `pub const EDITOR: u16 = 50052;`, and the
    service passing that constant to run_binary (so the two cannot drift apart)."""
    name = PORT_CONSTANTS[deployment]
    with open(os.path.join(root, PORTS_SOURCE), encoding="utf-8") as f:
        m = re.search(rf"pub const {name}: u16 = (\d+);", f.read())
    if not m:
        raise ValueError(f"no `pub const {name}: u16 = PORT;` in {PORTS_SOURCE}")
    source = PORT_USERS[deployment]
    with open(os.path.join(root, source), encoding="utf-8") as f:
        if f"default_ports::{name}" not in f.read():
            raise ValueError(f"{source} does not pass default_ports::{name} to run_binary")
    return int(m.group(1))


def default_grace_secs(root):
    with open(os.path.join(root, "common/src/config.rs"), encoding="utf-8") as f:
        m = GRACE.search(f.read())
    if not m:
        raise ValueError("no ARF_SHUTDOWN_GRACE_SECS default in common/src/config.rs")
    return int(m.group(1))
