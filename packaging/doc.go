// Package packaging holds no code: its tests check what a user installs.
// They drive the Makefile (make install, uninstall, man, deb) and the files
// it installs: the file layout and modes under DESTDIR, a rules file that
// survives a reinstall, the systemd unit through systemd-analyze verify,
// the man pages through man --warnings, the .deb through dpkg on this
// machine, and the bash and zsh completions through the shells themselves.
//
// Prerequisites missing (root, dpkg, man, zsh) skip a test, or fail it
// when CI=true, where .ci/run has installed them.
package packaging
