#include <stdio.h>
#include <jpeglib.h>
#include <png.h>
