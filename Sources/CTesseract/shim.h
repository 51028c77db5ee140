// Tesseract's C API (Debian libtesseract-dev): the OCR expert of LLaMA-Adapter V2 section 4.4.
#ifndef CTESSERACT_SHIM_H
#define CTESSERACT_SHIM_H
#include <tesseract/capi.h>
#endif
