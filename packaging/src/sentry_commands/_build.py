# Replaced by packaging/build-deb with the Debian package version.
PACKAGE_VERSION = "0+unknown"
