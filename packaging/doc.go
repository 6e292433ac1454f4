// Package packaging holds no code: its tests check what a user installs.
// They drive the Makefile (make install, uninstall, man, deb, tarball,
// release) and the files it installs: the file layout and modes under
// DESTDIR, a rules file that survives a reinstall, the systemd unit
// through systemd-analyze verify, the man pages through man --warnings,
// the .deb through dpkg on this machine and through lintian, its
// copyright file against the modules compiled in, the bash and zsh
// completions through the shells themselves, the two builds against a
// user only NSS knows, and two make release runs of one commit against
// each other.
//
// Prerequisites missing (root, dpkg, man, zsh, lintian) skip a test, or
// fail it when CI=true, where .ci/run has installed them.
package packaging
