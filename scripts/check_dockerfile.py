#!/usr/bin/env python3
"""Replays the build stage of the Dockerfile without a Docker engine.

What `docker build` would do, as closely as a machine without an engine allows:

1. parse the Dockerfile (continuation lines, parser directives, JSON and shell forms);
2. list the build context the way the engine sends it: every file of the directory except
   those .dockerignore excludes (moby's patternmatcher rules: `*`, `?`, `[...]`, `**`,
   `!` exceptions, later lines win, a pattern that matches a parent directory excludes
   everything under it);
3. for every stage the final stage copies from, replay it in an empty directory that stands
   for the image's root: WORKDIR, ENV/ARG, COPY/ADD from the context (a source missing from
   the filtered context fails, as it does in the engine), and RUN lines, whose commands are
   run for real with every absolute path mapped into that directory;
4. check the final stage's `COPY --from=` sources exist once the build stages are done
   (BuildKit cache mounts are detached after their RUN, as in the engine), that the copied
   binary runs (`--version`) and carries no debug info, and that the final stage does not
   run as root.

Not replayed: RUN lines of the runtime stage (they need the base image's package manager),
and the base images themselves: the build uses this machine's Rust toolchain, so a builder
image older than it fails the check (it could not vouch for that older compiler).

RUN lines are run by this script, not by a shell: a sequence of simple commands joined by
`&&` or `;`, with `>`/`>>` redirections and `$VAR` from the stage's ENV/ARG. Only the
commands in ALLOWED run; anything else fails the check with a message saying so, so the
Dockerfile cannot silently outgrow what this replays.

Environment:
  MBPROV_DOCKER_CHECK_TARGET_DIR  cargo's target directory for the replay (stands for the
                                  Dockerfile's cache mount of WORKDIR/target, or for
                                  WORKDIR/target itself): reuse a warm one across runs.
                                  Default: a fresh directory, removed afterwards.
  MBPROV_DOCKER_CHECK_OFFLINE=1   build with `CARGO_NET_OFFLINE=true` (from the local
                                  registry cache only).

Usage: check_dockerfile.py [--dockerfile PATH] [--context DIR] [--keep]
Exit status: 0 when the replay builds, 1 when it does not, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath

# Commands a RUN line may use. Each one only ever sees paths inside the replay root.
ALLOWED = {
    "cargo", "rustc", "mkdir", "touch", "rm", "echo", "printf", "install", "cp", "mv", "ln",
    "chmod", "strip", "test", "true", "ls", "cat",
}
# Run as no-ops: ownership is the runtime stage's business, and `set -e` is what the replay
# does anyway (it stops at the first failing command).
NO_OPS = {"set", "chown"}
# Environment of the base image that must stay the host's: the toolchain comes from here.
HOST_ENV = {"PATH", "CARGO_HOME", "RUSTUP_HOME", "HOME", "USER"}


class CheckError(Exception):
    """A reason the image would not build (or the replay cannot vouch for it)."""


# ---------------------------------------------------------------------------------------
# .dockerignore, as moby/patternmatcher reads and applies it.


@dataclasses.dataclass(frozen=True)
class Pattern:
    text: str
    exclusion: bool  # a `!` line: re-includes what it matches
    regex: re.Pattern


def _clean(path: str) -> str:
    """Go's filepath.Clean for slash paths (what the engine applies to every pattern)."""
    if path == "":
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    out = "/".join(parts)
    if rooted:
        return "/" + out
    return out or "."


def _compile(pattern: str) -> re.Pattern:
    """patternmatcher's Pattern.compile: `*` and `?` stop at `/`, `**` crosses it."""
    out = "^"
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                i += 2
                if i < n and pattern[i] == "/":  # `**/` is `**`
                    i += 1
                if i >= n:
                    out += ".*"
                else:
                    out += "(.*/)?"
                continue
            out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "\\":
            if i + 1 < n:
                i += 1
                out += re.escape(pattern[i])
            else:
                out += "\\\\"
        elif ch in "[]":
            out += ch
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(out + "$", re.DOTALL)


def parse_dockerignore(text: str) -> list[Pattern]:
    """The lines of a .dockerignore, as moby's ignorefile.ReadAll reads them."""
    patterns = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
        line = _clean(line)
        if len(line) > 1 and line.startswith("/"):
            line = line[1:]
        patterns.append(Pattern(line, exclusion, _compile(line)))
    return patterns


def is_excluded(patterns: list[Pattern], path: str) -> bool:
    """patternmatcher.MatchesOrParentMatches: the last pattern that matches the path or one
    of its parent directories decides."""
    parents = path.split("/")[:-1]
    matched = False
    for p in patterns:
        # Only a pattern that could change the answer is evaluated (as in moby).
        if p.exclusion != matched:
            continue
        hit = bool(p.regex.match(path))
        if not hit:
            for i in range(len(parents)):
                if p.regex.match("/".join(parents[: i + 1])):
                    hit = True
                    break
        if hit:
            matched = not p.exclusion
    return matched


def _may_reinclude_under(patterns: list[Pattern], directory: str) -> bool:
    """Whether a `!` line could re-include something under an excluded directory, so the
    walk must descend (moby's fileutils does the same test to skip excluded trees)."""
    for p in patterns:
        if not p.exclusion:
            continue
        literal = re.split(r"[*?\[\\]", p.text, maxsplit=1)[0]
        if literal != p.text and "/" not in literal:
            return True  # starts with a wildcard: could be anywhere
        if literal.startswith(directory + "/") or directory.startswith(literal.rstrip("/")):
            return True
    return False


def context_files(root: Path, patterns: list[Pattern]) -> tuple[set[str], set[str]]:
    """The files and directories (relative slash paths) the engine would send as context."""
    files: set[str] = set()
    dirs: set[str] = set()
    for current, subdirs, names in os.walk(root):
        rel_dir = Path(current).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        keep = []
        for d in sorted(subdirs):
            rel = f"{rel_dir}/{d}" if rel_dir else d
            if is_excluded(patterns, rel):
                if _may_reinclude_under(patterns, rel):
                    keep.append(d)
                continue
            dirs.add(rel)
            keep.append(d)
        subdirs[:] = keep
        for name in names:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if not is_excluded(patterns, rel):
                files.add(rel)
                # A re-included file brings its parent directories with it.
                parent = PurePosixPath(rel).parent
                while str(parent) != ".":
                    dirs.add(str(parent))
                    parent = parent.parent
    return files, dirs


# ---------------------------------------------------------------------------------------
# Dockerfile parsing.


@dataclasses.dataclass
class Instruction:
    line: int
    keyword: str
    rest: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.keyword} {' '.join(self.rest.split())}"


@dataclasses.dataclass
class Stage:
    index: int
    base: str
    name: str | None
    instructions: list[Instruction]


def parse_dockerfile(text: str) -> tuple[list[Instruction], list[Stage]]:
    """Instructions (global ARGs before the first FROM) and stages."""
    escape = "\\"
    lines = text.splitlines()
    # Parser directives: `# key=value` lines at the very top.
    for raw in lines:
        m = re.match(r"^#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*$", raw)
        if not m:
            break
        if m.group(1).lower() == "escape":
            escape = m.group(2)
    instructions: list[Instruction] = []
    buf = ""
    start = 0
    for number, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped
        if not buf:
            start = number
        if raw.rstrip().endswith(escape):
            buf += raw.rstrip()[: -len(escape)] + " "
            continue
        buf += raw
        keyword, _, rest = buf.strip().partition(" ")
        if "<<" in rest and keyword.upper() in ("RUN", "COPY"):
            raise CheckError(f"line {start}: heredocs are not replayed; write the file in the repository")
        instructions.append(Instruction(start, keyword.upper(), rest.strip()))
        buf = ""
    if buf:
        raise CheckError("the Dockerfile ends inside a continued line")

    global_args: list[Instruction] = []
    stages: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            words = [w for w in ins.rest.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append(Stage(len(stages), words[0], name, []))
        elif not stages:
            if ins.keyword != "ARG":
                raise CheckError(f"{ins}: only ARG may come before the first FROM")
            global_args.append(ins)
        else:
            stages[-1].instructions.append(ins)
    if not stages:
        raise CheckError("the Dockerfile has no FROM")
    return global_args, stages


def split_flags(rest: str) -> tuple[dict[str, list[str]], str]:
    """Leading `--flag=value` words of an instruction, and what follows them."""
    flags: dict[str, list[str]] = {}
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        key, _, value = word[2:].partition("=")
        flags.setdefault(key, []).append(value)
        rest = rest.lstrip()
    return flags, rest


def json_or_words(rest: str) -> list[str]:
    if rest.startswith("["):
        try:
            value = json.loads(rest)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    return shlex.split(rest, posix=True)


def substitute(text: str, env: dict[str, str], where: str) -> str:
    """`$VAR`, `${VAR}` and `${VAR:-default}` from the stage's ENV and ARG."""

    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        default = m.group(3)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise CheckError(f"{where}: ${name} is not set by an ENV or ARG of this stage")

    return re.sub(r"\$(?:([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\})", repl, text)


def parse_env(rest: str) -> list[tuple[str, str]]:
    if "=" not in rest.split(" ", 1)[0]:
        key, _, value = rest.partition(" ")  # legacy `ENV KEY value`
        return [(key, value.strip())]
    pairs = []
    for word in shlex.split(rest, posix=True):
        key, _, value = word.partition("=")
        pairs.append((key, value))
    return pairs


# ---------------------------------------------------------------------------------------
# The replay.


class Replay:
    def __init__(self, context: Path, files: set[str], dirs: set[str], work: Path, target_dir: Path,
                 log=print):
        self.context = context
        self.files = files
        self.dirs = dirs
        self.work = work
        self.target_dir = target_dir
        self.log = log
        self.roots: dict[str, Path] = {}
        self.workdirs: dict[str, str] = {}

    # -- paths ---------------------------------------------------------------------------

    def in_root(self, root: Path, path: str, cwd: str) -> Path:
        """An image path (absolute, or relative to WORKDIR) as a path inside the root."""
        full = _clean(path if path.startswith("/") else f"{cwd}/{path}")
        if full.startswith("/.."):
            raise CheckError(f"{path} escapes the image's root")
        return root / full.lstrip("/")

    # -- COPY ----------------------------------------------------------------------------

    def context_sources(self, src: str, where: str) -> list[str]:
        src = _clean(src.lstrip("/")) if src not in ("", "/") else "."
        if src.startswith(".."):
            raise CheckError(f"{where}: {src} is outside the build context")
        if src == ".":
            return ["."]
        if any(c in src for c in "*?["):
            hits = sorted(p for p in self.files | self.dirs if fnmatch.fnmatchcase(p, src)
                          and p.count("/") == src.count("/"))
            if not hits:
                raise CheckError(f"{where}: no file of the build context matches {src} "
                                 "(after .dockerignore)")
            return hits
        if src not in self.files and src not in self.dirs:
            if (self.context / src).exists():
                raise CheckError(f"{where}: {src} is excluded by .dockerignore")
            raise CheckError(f"{where}: {src} does not exist in the build context")
        return [src]

    def copy_from_context(self, root: Path, ins: Instruction, env: dict[str, str], cwd: str) -> None:
        flags, rest = split_flags(ins.rest)
        if "from" in flags:
            return  # COPY --from: checked after the build stages ran
        words = [substitute(w, env, str(ins)) for w in json_or_words(rest)]
        if len(words) < 2:
            raise CheckError(f"{ins}: needs a source and a destination")
        *sources, dest = words
        if ins.keyword == "ADD" and any(re.match(r"^[a-z]+://", s) or s.endswith((".tar", ".tar.gz", ".tgz")) for s in sources):
            raise CheckError(f"{ins}: ADD of URLs or archives is not replayed; use COPY")
        resolved = [p for s in sources for p in self.context_sources(s, str(ins))]
        dest_is_dir = dest.endswith("/") or len(resolved) > 1 or dest in (".", "./")
        dest_path = self.in_root(root, dest, cwd)
        for rel in resolved:
            if rel == "." or rel in self.dirs:
                self._copy_dir(rel, dest_path)
            else:
                target = dest_path / PurePosixPath(rel).name if dest_is_dir or dest_path.is_dir() else dest_path
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(self.context / rel, target)

    def _copy_dir(self, rel: str, dest: Path) -> None:
        """A directory's contents, as the filtered context holds them."""
        prefix = "" if rel == "." else rel + "/"
        dest.mkdir(parents=True, exist_ok=True)
        for d in sorted(self.dirs):
            if d.startswith(prefix):
                (dest / d[len(prefix):]).mkdir(parents=True, exist_ok=True)
        for f in sorted(self.files):
            if f.startswith(prefix):
                target = dest / f[len(prefix):]
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(self.context / f, target, follow_symlinks=False)

    # -- RUN -----------------------------------------------------------------------------

    def run(self, root: Path, ins: Instruction, env: dict[str, str], cwd: str) -> None:
        flags, rest = split_flags(ins.rest)
        mounts = []
        for spec in flags.get("mount", []):
            fields = dict(f.partition("=")[::2] for f in spec.split(","))
            kind = fields.get("type", "bind")
            target = fields.get("target") or fields.get("dst") or fields.get("destination")
            if kind != "cache" or not target:
                raise CheckError(f"{ins}: only `--mount=type=cache,target=...` is replayed")
            mounts.append(target)
        attached = [self._attach_cache(root, t, cwd) for t in mounts]
        try:
            if rest.startswith("["):
                commands = [json_or_words(rest)]
            else:
                commands = self._parse_shell(rest, env, str(ins))
            for argv, redirect in commands:
                self._exec(root, argv, redirect, env, cwd, str(ins))
        finally:
            for link in attached:
                # The engine detaches a cache mount after its RUN: what the RUN left there
                # is not in the image.
                if link.is_symlink():
                    link.unlink()
                    link.mkdir(exist_ok=True)

    def _attach_cache(self, root: Path, target: str, cwd: str) -> Path:
        path = self.in_root(root, target, cwd)
        if path.is_symlink():
            path.unlink()
        elif path.exists():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.name == "target":
            backing = self.target_dir  # cargo's target directory: the warm one
        elif "cargo" in target and "registry" in target:
            backing = self.work / "cargo-registry-unused"  # the host's CARGO_HOME serves it
        else:
            backing = self.work / ("cache" + target.replace("/", "_"))
        backing.mkdir(parents=True, exist_ok=True)
        path.symlink_to(backing, target_is_directory=True)
        return path

    def _parse_shell(self, script: str, env: dict[str, str], where: str):
        lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|<>()")
        lexer.whitespace_split = True
        lexer.commenters = ""
        tokens = list(lexer)
        commands = []
        argv: list[str] = []
        redirect = None
        i = 0
        while i < len(tokens):
            tok = tokens[i]
            if tok in ("&&", ";"):
                if argv:
                    commands.append((argv, redirect))
                argv, redirect = [], None
            elif tok in (">", ">>"):
                if i + 1 >= len(tokens):
                    raise CheckError(f"{where}: a redirection without a file")
                redirect = (tok, substitute(tokens[i + 1], env, where))
                i += 1
            elif tok in ("|", "||", "&", "<", "(", ")", "<<") or "`" in tok or "$(" in tok:
                raise CheckError(f"{where}: `{tok}` is not replayed; keep RUN lines to commands "
                                 "joined by && (see scripts/check_dockerfile.py)")
            else:
                argv.append(substitute(tok, env, where))
            i += 1
        if argv:
            commands.append((argv, redirect))
        return commands

    def _exec(self, root: Path, argv: list[str], redirect, env: dict[str, str], cwd: str, where: str) -> None:
        name = argv[0]
        if name in NO_OPS:
            return
        if name not in ALLOWED:
            raise CheckError(f"{where}: `{name}` is not among the commands this check runs "
                             f"({', '.join(sorted(ALLOWED))}); extend ALLOWED in "
                             "scripts/check_dockerfile.py if it is safe to run on the host")
        args = [name] + [self._map_arg(root, a, cwd) for a in argv[1:]]
        run_env = {k: v for k, v in os.environ.items()}
        for k, v in env.items():
            if k in HOST_ENV:
                continue
            run_env[k] = str(self.in_root(root, v, "/")) if v.startswith("/") else v
        if os.environ.get("MBPROV_DOCKER_CHECK_OFFLINE") == "1":
            run_env["CARGO_NET_OFFLINE"] = "true"
        workdir = self.in_root(root, cwd, "/")
        workdir.mkdir(parents=True, exist_ok=True)
        self.log(f"   $ {' '.join(shlex.quote(a) for a in argv)}"
                 + (f" {redirect[0]} {redirect[1]}" if redirect else ""))
        stdout = None
        if redirect:
            out_path = self.in_root(root, redirect[1], cwd)
            stdout = open(out_path, "a" if redirect[0] == ">>" else "w")
        try:
            result = subprocess.run(args, cwd=workdir, env=run_env, stdout=stdout)
        finally:
            if stdout:
                stdout.close()
        if result.returncode != 0:
            raise CheckError(f"{where}: `{' '.join(argv)}` exited with status {result.returncode}")

    def _map_arg(self, root: Path, arg: str, cwd: str) -> str:
        if arg.startswith("/"):
            return str(self.in_root(root, arg, cwd))
        m = re.match(r"^(--?[A-Za-z0-9-]+=)(/.*)$", arg)
        if m:
            return m.group(1) + str(self.in_root(root, m.group(2), cwd))
        if not arg.startswith("-") and ".." in arg.split("/"):
            self.in_root(root, arg, cwd)  # raises when it leaves the root
        return arg

    # -- stages --------------------------------------------------------------------------

    def stage(self, stage: Stage, args: dict[str, str], stages_by_name: dict[str, Stage]) -> None:
        key = stage.name or str(stage.index)
        base = stages_by_name.get(stage.base)
        root = self.work / f"stage-{stage.index}"
        if base is not None:
            shutil.copytree(self.roots[base.name or str(base.index)], root, symlinks=True)
            cwd = self.workdirs[base.name or str(base.index)]
        else:
            root.mkdir(parents=True)
            # What every Debian-based image has, so `install x /usr/local/bin/` behaves.
            for d in ("usr/local/bin", "usr/bin", "bin", "tmp", "etc", "root"):
                (root / d).mkdir(parents=True, exist_ok=True)
            cwd = "/"
        self.roots[key] = root
        env = dict(args)
        # A warm target for Dockerfiles that keep target/ in the image rather than a cache mount.
        self.log(f"== stage {key} (FROM {stage.base}) in an empty root")
        for ins in stage.instructions:
            kw = ins.keyword
            if kw == "WORKDIR":
                cwd = _clean(substitute(ins.rest, env, str(ins)) if ins.rest.startswith("/")
                             else f"{cwd}/{substitute(ins.rest, env, str(ins))}")
                self.in_root(root, cwd, "/").mkdir(parents=True, exist_ok=True)
                self._link_target(root, cwd)
            elif kw in ("ENV", "ARG"):
                for k, v in parse_env(ins.rest) if kw == "ENV" else [self._arg(ins.rest)]:
                    if kw == "ARG" and k in env:
                        continue
                    env[k] = substitute(v, env, str(ins))
            elif kw in ("COPY", "ADD"):
                self.log(f"   {kw} {ins.rest}")
                self.copy_from_context(root, ins, env, cwd)
            elif kw == "RUN":
                self.run(root, ins, env, cwd)
            elif kw in ("LABEL", "EXPOSE", "CMD", "ENTRYPOINT", "USER", "HEALTHCHECK", "SHELL",
                        "STOPSIGNAL", "VOLUME", "ONBUILD", "MAINTAINER"):
                if kw == "SHELL":
                    raise CheckError(f"{ins}: SHELL is not replayed")
            else:
                raise CheckError(f"{ins}: unknown instruction")
        self.workdirs[key] = cwd

    def _link_target(self, root: Path, cwd: str) -> None:
        """Without a cache mount, cargo's target directory is WORKDIR/target in the image; it
        stands on the warm directory so that a rerun does not rebuild every crate."""
        path = self.in_root(root, f"{cwd}/target", "/")
        if not path.exists() and not path.is_symlink():
            path.symlink_to(self.target_dir, target_is_directory=True)

    @staticmethod
    def _arg(rest: str) -> tuple[str, str]:
        key, _, value = rest.partition("=")
        return key.strip(), value.strip().strip('"')


# ---------------------------------------------------------------------------------------
# Checks on the result.


def elf_sections(path: Path) -> set[str]:
    """Section names of a 64-bit little-endian ELF file (enough for x86_64 and aarch64)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise CheckError(f"{path.name} is not a 64-bit little-endian ELF file")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    def header(i):
        return struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
    strtab = header(shstrndx)
    names = set()
    for i in range(shnum):
        name_off = header(i)[0]
        start = strtab[4] + name_off
        names.add(data[start:data.index(b"\0", start)].decode())
    return names


def rust_minor(text: str) -> tuple[int, int] | None:
    m = re.search(r"(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def check_toolchain(stage: Stage, log) -> None:
    """The replay compiles with this machine's Rust: it vouches for a builder image whose Rust
    is at least as new, not for an older one."""
    image = stage.base
    if not image.startswith("rust:"):
        log(f"   note: builder image {image} is not an official rust image; toolchain not compared")
        return
    tag = image.split(":", 1)[1]
    local = subprocess.run(["rustc", "--version"], capture_output=True, text=True, check=True).stdout
    have = rust_minor(local)
    m = re.match(r"^(\d+)(?:\.(\d+))?", tag)
    if not m:
        raise CheckError(f"builder image {image}: cannot read a Rust version from its tag")
    if m.group(2) is None:
        log(f"   note: builder image {image} floats on the newest Rust 1.x (not pinned)")
        return
    want = (int(m.group(1)), int(m.group(2)))
    if have is None or want < have:
        raise CheckError(f"builder image {image} has Rust {want[0]}.{want[1]}, older than this "
                         f"machine's {local.strip()}: the replay cannot vouch for it")
    log(f"   builder image {image}; replayed with {local.strip()}")


def final_checks(replay: Replay, stages: list[Stage], final: Stage, log) -> None:
    by_name = {s.name: s for s in stages if s.name}
    copied: list[str] = []
    for ins in final.instructions:
        if ins.keyword != "COPY":
            continue
        flags, rest = split_flags(ins.rest)
        if "from" not in flags:
            continue
        src_stage = by_name.get(flags["from"][0]) or (stages[int(flags["from"][0])]
                                                     if flags["from"][0].isdigit() else None)
        if src_stage is None:
            log(f"   note: {ins} copies from an image, not a stage; not checked")
            continue
        key = src_stage.name or str(src_stage.index)
        *sources, dest = json_or_words(rest)
        for src in sources:
            path = replay.in_root(replay.roots[key], src, replay.workdirs[key])
            if not path.exists():
                raise CheckError(f"{ins}: {src} does not exist in stage {key} after its build "
                                 "(a cache mount's contents are not part of the image)")
            if path.is_file() and os.access(path, os.X_OK):
                size = path.stat().st_size
                sections = elf_sections(path)
                debug = sorted(s for s in sections if s.startswith(".debug"))
                if debug:
                    raise CheckError(f"{src} carries debug info ({', '.join(debug)}): "
                                     "build it with a profile without debug info")
                version = subprocess.run([str(path), "--version"], capture_output=True, text=True)
                if version.returncode != 0:
                    raise CheckError(f"{src} --version exited with {version.returncode}")
                symtab = "stripped" if ".symtab" not in sections else "not stripped"
                log(f"   {src}: {size / 1e6:.1f} MB, no debug info, {symtab}; "
                    f"--version: {version.stdout.strip()}")
            copied.append(dest if not dest.endswith("/") else dest + PurePosixPath(src).name)
    user = None
    entrypoint = None
    for ins in final.instructions:
        if ins.keyword == "USER":
            user = ins.rest.split(":")[0].strip()
        if ins.keyword == "ENTRYPOINT":
            entrypoint = json_or_words(ins.rest)
    if user in (None, "root", "0"):
        raise CheckError("the final stage runs as root: add a USER line")
    if entrypoint:
        exe = entrypoint[0]
        if "/" not in exe and not any(c.endswith("/" + exe) for c in copied):
            log(f"   note: ENTRYPOINT {exe} is not one of the copied files; assumed in the base image")
    log(f"   final stage runs as user {user}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dockerfile", default=None, help="default: CONTEXT/Dockerfile")
    parser.add_argument("--context", default=str(Path(__file__).resolve().parent.parent))
    parser.add_argument("--keep", action="store_true", help="keep the replay directory")
    opts = parser.parse_args(argv)
    context = Path(opts.context).resolve()
    dockerfile = Path(opts.dockerfile) if opts.dockerfile else context / "Dockerfile"
    started = time.monotonic()

    def log(msg: str) -> None:
        print(msg, flush=True)

    work = Path(tempfile.mkdtemp(prefix="mbprov-docker-check-"))
    target_env = os.environ.get("MBPROV_DOCKER_CHECK_TARGET_DIR")
    target_dir = Path(target_env).resolve() if target_env else work / "target"
    target_dir.mkdir(parents=True, exist_ok=True)
    try:
        ignore = context / ".dockerignore"
        patterns = parse_dockerignore(ignore.read_text()) if ignore.exists() else []
        files, dirs = context_files(context, patterns)
        log(f"check-dockerfile: {dockerfile.name}, context {len(files)} files after .dockerignore; "
            f"target dir {'(warm) ' + str(target_dir) if target_env else '(fresh)'}")
        global_args, stages = parse_dockerfile(dockerfile.read_text())
        args = dict(Replay._arg(a.rest) for a in global_args)
        for s in stages:  # `FROM rust:${RUST}-bookworm` takes the ARGs declared before it
            s.base = substitute(s.base, args, f"FROM {s.base}")
        by_name = {s.name: s for s in stages if s.name}
        final = stages[-1]
        # The stages the final one needs: those it copies from, and their bases.
        needed: list[Stage] = []
        pending = []
        for ins in final.instructions:
            if ins.keyword == "COPY":
                flags, _ = split_flags(ins.rest)
                for ref in flags.get("from", []):
                    s = by_name.get(ref) or (stages[int(ref)] if ref.isdigit() else None)
                    if s is not None:
                        pending.append(s)
        while pending:
            s = pending.pop()
            if s not in needed:
                needed.append(s)
                if s.base in by_name:
                    pending.append(by_name[s.base])
        if not needed:
            raise CheckError("the final stage copies from no build stage: nothing to replay")
        replay = Replay(context, files, dirs, work, target_dir, log)
        for s in sorted(needed, key=lambda s: s.index):
            if s.base not in by_name:
                check_toolchain(s, log)
            replay.stage(s, args, by_name)
        # The final stage: its context COPYs must exist too (its RUN lines are not replayed).
        log(f"== final stage (FROM {final.base}): COPY sources, user, binary")
        for ins in final.instructions:
            if ins.keyword in ("COPY", "ADD") and "from" not in split_flags(ins.rest)[0]:
                *sources, _ = json_or_words(split_flags(ins.rest)[1])
                for src in sources:
                    replay.context_sources(src, str(ins))
        final_checks(replay, stages, final, log)
    except CheckError as e:
        log(f"check-dockerfile: FAILED: {e}")
        return 1
    finally:
        if opts.keep:
            log(f"check-dockerfile: replay kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    log(f"check-dockerfile: OK, the build stage builds ({time.monotonic() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
