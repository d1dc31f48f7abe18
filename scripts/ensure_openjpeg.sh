#!/usr/bin/env sh
# glymur (JPEG 2000 slices of the external HOA kidney) needs the OpenJPEG C library.
# Installs Debian's libopenjp2-7 when it is missing and we are root with apt-get; otherwise
# says what to do and fails, so `make install` never reports success without it.
set -eu
have_openjpeg() {
    ldconfig -p 2>/dev/null | grep -q 'libopenjp2\.so' && return 0
    python3 -c "import ctypes.util, sys; sys.exit(0 if ctypes.util.find_library('openjp2') else 1)" 2>/dev/null
}
if have_openjpeg; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing libopenjp2-7 (OpenJPEG, needed by glymur for .jp2 slices)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q libopenjp2-7 >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libopenjp2-7 >/dev/null; }
    have_openjpeg && exit 0
fi
cat >&2 <<'MSG'
error: the OpenJPEG library (libopenjp2) is missing; glymur cannot read the .jp2 slices without it.
  Debian/Ubuntu: sudo apt-get install libopenjp2-7
  conda:         conda install -c conda-forge openjpeg
  macOS:         brew install openjpeg
Then run `make install` again.
MSG
exit 1
