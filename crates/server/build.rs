//! Embeds the git commit in `--version` as `ATTENDANCED_GIT_COMMIT`: `git rev-parse --short
//! HEAD`, or `$ATTENDANCED_GIT_COMMIT` if set at build time (for builds from a tarball), or
//! `unknown`. Reruns only when HEAD or the branch it points to moves, so ordinary builds do not
//! run git.

include!("../../build-support/git_commit.rs");
