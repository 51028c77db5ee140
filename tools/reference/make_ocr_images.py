#!/usr/bin/env python3
"""Renders the OCR expert's test images into Tests/Fixtures/ocr/ (DejaVu fonts from Debian's fonts-dejavu-core):
  notice.png   a short notice in three lines of sans-serif text
  receipt.png  a receipt-like layout: shop name, items with right-aligned prices, a total, a date
and expected.json with the text drawn, which the Swift tests compare with what Tesseract recognises.
Run: /usr/bin/python3 tools/reference/make_ocr_images.py
"""
import json
import os

from PIL import Image, ImageDraw, ImageFont

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Tests", "Fixtures", "ocr")
SANS = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
MONO = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"


def notice():
    lines = ["The library opens at nine o'clock.", "Please return all books", "before Friday, 12 March."]
    img = Image.new("RGB", (620, 190), (250, 248, 240))
    d = ImageDraw.Draw(img)
    f = ImageFont.truetype(SANS, 30)
    for i, line in enumerate(lines):
        d.text((24, 24 + 50 * i), line, font=f, fill=(20, 20, 30))
    return img, lines


def receipt():
    items = [("Bread", "2.40"), ("Milk", "1.15"), ("Apples", "3.60"), ("Coffee", "7.25")]
    img = Image.new("RGB", (420, 460), (255, 255, 255))
    d = ImageDraw.Draw(img)
    d.text((110, 20), "CORNER SHOP", font=ImageFont.truetype(BOLD, 30), fill=(0, 0, 0))
    mono = ImageFont.truetype(MONO, 26)
    d.text((30, 75), "Date: 2026-11-30", font=mono, fill=(0, 0, 0))
    y = 130
    lines = ["CORNER SHOP", "Date: 2026-11-30"]
    for name, price in items:
        d.text((30, y), name, font=mono, fill=(0, 0, 0))
        w = d.textlength(price, font=mono)
        d.text((390 - w, y), price, font=mono, fill=(0, 0, 0))
        lines.append(f"{name} {price}")
        y += 45
    d.line((30, y + 5, 390, y + 5), fill=(0, 0, 0), width=2)
    y += 20
    d.text((30, y), "TOTAL", font=ImageFont.truetype(BOLD, 26), fill=(0, 0, 0))
    w = d.textlength("14.40", font=mono)
    d.text((390 - w, y), "14.40", font=mono, fill=(0, 0, 0))
    lines.append("TOTAL 14.40")
    return img, lines


def main():
    os.makedirs(OUT, exist_ok=True)
    expected = {}
    for name, make in [("notice", notice), ("receipt", receipt)]:
        img, lines = make()
        img.save(os.path.join(OUT, name + ".png"), optimize=True)
        expected[name + ".png"] = lines
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)


if __name__ == "__main__":
    main()
