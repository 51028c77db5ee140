// libjpeg-turbo, found through pkg-config (`libjpeg`), so that Homebrew's prefix reaches the compiler and linker;
// CImageCodecs' decoders use it (its own module map finds libpng the same way).
#ifndef CJPEG_SHIM_H
#define CJPEG_SHIM_H
#include <stdio.h>
#include <jpeglib.h>
#endif
