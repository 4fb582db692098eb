"""Table tests of scripts/check_dockerfile.py's pure parts, and small replays of made-up
Dockerfiles (no cargo: the replays use `install`, `mkdir` and `echo`).

Run: python3 -m unittest discover -s scripts -p 'test_*.py'
"""

import contextlib
import io
import os
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import check_dockerfile as cd  # noqa: E402


class DockerignoreTest(unittest.TestCase):
    # (patterns, path, excluded?) — cases after moby/patternmatcher's own tests
    # (TestMatches, TestPatternMatchesFolderExclusions, TestMatchesWithMalformedPatterns)
    # and the .dockerignore documentation's examples.
    CASES = [
        (["target/"], "target", True),
        (["target/"], "target/debug/mbprov", True),  # a parent directory matches
        (["target"], "src/target", False),  # patterns are anchored at the context root
        (["/target"], "target/x", True),  # a leading slash is dropped
        (["*.log"], "a.log", True),
        (["*.log"], "logs/a.log", False),  # `*` stops at `/`
        (["**/*.log"], "logs/deep/a.log", True),
        (["**/*.log"], "a.log", True),  # `**/` also matches no directory at all
        (["**/api-key"], "run/mbprov/api-key", True),
        (["docs/**"], "docs/a/b.md", True),
        (["docs/**"], "docsx", False),
        (["a/**/b"], "a/b", True),
        (["a/**/b"], "a/x/y/b", True),
        (["?.txt"], "a.txt", True),
        (["?.txt"], "ab.txt", False),
        (["[ab].rs"], "b.rs", True),
        (["[ab].rs"], "c.rs", False),
        ([".git/"], ".git", True),  # a worktree's .git is a file: the slash is cleaned away
        (["*", "!src"], "src/main.rs", False),  # an exception re-includes a directory's files
        (["*", "!src"], "README.md", True),
        (["*", "!src", "src/secret"], "src/secret", True),  # later lines win
        (["docs", "!docs/keep.md"], "docs/keep.md", False),
        (["docs", "!docs/keep.md"], "docs/other.md", True),
        (["!src", "src"], "src/a.rs", True),
        (["# a comment", "x"], "x", True),
        (["  spaced  "], "spaced", True),
        (["./a/../b"], "b", True),  # patterns are cleaned like paths
        (["\\*"], "*", True),  # an escaped star is literal
        (["\\*"], "x", False),
    ]

    def test_table(self):
        for patterns, path, want in self.CASES:
            with self.subTest(patterns=patterns, path=path):
                parsed = cd.parse_dockerignore("\n".join(patterns))
                self.assertEqual(cd.is_excluded(parsed, path), want)

    def test_context_walk_reincludes_under_an_excluded_directory(self):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for rel in ["a/keep.txt", "a/drop.txt", "b/x.txt", "c.txt"]:
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_text(rel)
            patterns = cd.parse_dockerignore("a\n!a/keep.txt\nc.txt\n")
            files, dirs = cd.context_files(root, patterns)
            self.assertEqual(files, {"a/keep.txt", "b/x.txt"})
            self.assertIn("a", dirs)  # brought in by its re-included file


class ParseTest(unittest.TestCase):
    def test_stages_continuations_and_comments(self):
        text = (
            "# syntax=docker/dockerfile:1\n"
            "ARG V=1\n"
            "FROM rust:1.95-bookworm AS builder\n"
            "RUN echo a \\\n"
            "# a comment inside the continuation\n"
            " && echo b\n"
            "FROM debian:bookworm-slim\n"
            "COPY --from=builder /out/x /usr/local/bin/x\n"
        )
        global_args, stages = cd.parse_dockerfile(text)
        self.assertEqual([a.rest for a in global_args], ["V=1"])
        self.assertEqual([(s.base, s.name) for s in stages],
                         [("rust:1.95-bookworm", "builder"), ("debian:bookworm-slim", None)])
        run = stages[0].instructions[0]
        self.assertEqual(run.keyword, "RUN")
        self.assertEqual(" ".join(run.rest.split()), "echo a && echo b")

    def test_heredoc_is_refused(self):
        with self.assertRaises(cd.CheckError):
            cd.parse_dockerfile("FROM x\nRUN <<EOF\necho\nEOF\n")

    def test_flags(self):
        flags, rest = cd.split_flags("--mount=type=cache,target=/a --mount=type=cache,target=/b cargo build")
        self.assertEqual(flags["mount"], ["type=cache,target=/a", "type=cache,target=/b"])
        self.assertEqual(rest, "cargo build")

    def test_substitute(self):
        env = {"A": "x"}
        self.assertEqual(cd.substitute("$A/${A}/${B:-d}", env, "t"), "x/x/d")
        with self.assertRaises(cd.CheckError):
            cd.substitute("$MISSING", env, "t")

    def test_rust_minor(self):
        self.assertEqual(cd.rust_minor("rustc 1.95.0 (59807616e 2026-04-14)"), (1, 95))


class ShellTest(unittest.TestCase):
    def setUp(self):
        self.replay = cd.Replay(Path("."), set(), set(), Path("."), Path("."), log=lambda m: None)

    def test_sequence_and_redirect(self):
        cmds = self.replay._parse_shell("mkdir src && echo 'fn main() {}' > src/main.rs; touch x", {}, "t")
        self.assertEqual(cmds, [(["mkdir", "src"], None),
                                (["echo", "fn main() {}"], (">", "src/main.rs")),
                                (["touch", "x"], None)])

    def test_pipes_and_substitutions_are_refused(self):
        for script in ["a | b", "a || b", "echo $(id)", "echo `id`", "a & b"]:
            with self.subTest(script=script), self.assertRaises(cd.CheckError):
                self.replay._parse_shell(script, {}, "t")


class ReplayTest(unittest.TestCase):
    """Whole replays of small Dockerfiles in a made-up context."""

    def replay(self, dockerfile: str, files: dict[str, str], ignore: str = "") -> tuple[int, str]:
        with tempfile.TemporaryDirectory() as tmp:
            ctx = Path(tmp) / "ctx"
            for rel, body in files.items():
                (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
                (ctx / rel).write_text(body)
            # Copied with mode 0644 below, so the final checks do not inspect it as a binary.
            exe = ctx / "bin" / "tool"
            exe.parent.mkdir(parents=True, exist_ok=True)
            exe.write_text("tool\n")
            (ctx / "Dockerfile").write_text(dockerfile)
            (ctx / ".dockerignore").write_text(ignore)
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                code = cd.main(["--context", str(ctx)])
            return code, out.getvalue()

    def assertFails(self, result: tuple[int, str], reason: str):
        code, out = result
        self.assertEqual(code, 1, out)
        self.assertIn(reason, out)

    OK = (
        "FROM rust:1 AS builder\nWORKDIR /src\nCOPY . .\n"
        "RUN mkdir -p /out && install -m 0644 bin/tool /out/tool\n"
        "FROM debian:bookworm-slim\nCOPY --from=builder /out/tool /usr/local/bin/tool\nUSER 1000\n"
    )

    def test_builds(self):
        self.assertEqual(self.replay(self.OK, {"src/a": "a"})[0], 0)

    def test_global_args_reach_from(self):
        df = "ARG BASE=rust:1\n" + self.OK.replace("FROM rust:1 AS builder", "FROM ${BASE} AS builder")
        self.assertEqual(self.replay(df, {"src/a": "a"})[0], 0)

    def test_missing_copy_source_fails(self):
        df = self.OK.replace("COPY . .", "COPY benches ./benches")
        self.assertFails(self.replay(df, {"src/a": "a"}), "benches does not exist in the build context")

    def test_source_excluded_by_dockerignore_fails(self):
        df = self.OK.replace("COPY . .", "COPY bin ./bin")
        self.assertFails(self.replay(df, {"src/a": "a"}, ignore="bin\n"), "bin is excluded by .dockerignore")

    def test_file_missing_from_the_staged_tree_fails(self):
        self.assertFails(self.replay(self.OK, {"src/a": "a"}, ignore="bin/tool\n"), "exited with status 1")

    def test_output_left_in_a_cache_mount_is_not_in_the_image(self):
        df = self.OK.replace(
            "RUN mkdir -p /out && install -m 0644 bin/tool /out/tool",
            "RUN --mount=type=cache,target=/out install -D -m 0644 bin/tool /out/tool",
        )
        self.assertFails(self.replay(df, {"src/a": "a"}), "a cache mount's contents are not part of the image")

    def test_unknown_command_fails(self):
        df = self.OK.replace("RUN mkdir", "RUN curl http://x && mkdir")
        self.assertFails(self.replay(df, {"src/a": "a"}), "`curl` is not among the commands")

    def test_root_final_stage_fails(self):
        self.assertFails(self.replay(self.OK.replace("USER 1000\n", ""), {"src/a": "a"}), "runs as root")

    def test_absolute_paths_stay_in_the_replay_root(self):
        # `install` to /usr/local/bin must land in the replay's root, not on this machine.
        marker = "/usr/local/bin/mbprov-check-dockerfile-test"
        df = self.OK.replace("/out/tool\n", "/out/tool && install -m 0644 bin/tool " + marker + "\n", 1)
        self.assertEqual(self.replay(df, {"src/a": "a"})[0], 0)
        self.assertFalse(os.path.exists(marker))


if __name__ == "__main__":
    unittest.main()
