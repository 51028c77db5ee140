#!/usr/bin/env python3
"""Renders examples/documents/: a small document-question set for the OCR expert (LLaMA-Adapter V2, section 4.4).

40 grayscale PNG documents, NN-kind.png, kinds in turn (receipt, notice, sign, form; 10 of each):
  receipt  shop name, date, 3-6 items with prices, TOTAL (sometimes CASH and CHANGE)
  notice   event title, date, time, room and building
  sign     short big text: PLATFORM 4, GATE B12, OPEN 9 AM - 5 PM, NO PARKING, SPEED LIMIT 30, ...
  form     filled fields: Name, Date of birth, City, Phone, Order number (order forms)
and questions.json, one question per image:
  {"image": "NN-kind.png", "kind": "receipt|notice|sign|form", "question": "...",
   "answer": "...", "accept": ["...", ...]}
`answer` is the expected short answer as printed in the document (compare case-insensitively); `accept`
lists acceptable lowercase variants ("14.40", "$14.40"; "room 204", "204"; ...). Which field is asked is
mixed within each kind, and every answer is unambiguous from the document.

Deterministic (seeded random.Random): rerunning rewrites identical files.
Needs Debian's python3-pil and the DejaVu fonts of fonts-dejavu-core (apt-get install -y fonts-dejavu-core).

Run:   /usr/bin/python3 tools/experts/make_documents.py
Check: /usr/bin/python3 tools/experts/make_documents.py --check [--show N]
  also runs Tesseract (apt-get install -y tesseract-ocr tesseract-ocr-eng) on every image, twice: as
  `tesseract FILE -` (automatic page segmentation, the command line's default) and through libtesseract's
  C API the way the OCR expert calls it (8-bit RGB, 300 dpi, the API's default single-block segmentation;
  `tesseract FILE - --psm 6 --dpi 300` when libtesseract.so.5 cannot be loaded), and counts the documents
  whose answer appears in the recognised text (case-insensitive, whole words, any spacing). Exits 1 when
  fewer than 95% of the documents hit in either mode. --show N prints the OCR text of the first N documents.
Layout choices come from that check: sign text stays at or below 80 px (Tesseract misreads bold glyphs much
larger and drops them near 100 px), form rules are solid (dotted ones break the single-block reading), and a
receipt's prices sit in a narrow centred column (far from their items, automatic layout reads them as a
separate column and sometimes drops it).
"""
import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import random

from PIL import Image, ImageDraw, ImageFont

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OUT = os.path.normpath(os.path.join(ROOT, "examples", "documents"))
FONTS = "/usr/share/fonts/truetype/dejavu/"
SANS, BOLD, MONO, MONO_BOLD, SERIF, SERIF_BOLD = (FONTS + f for f in (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf"))
PER_KIND = 10
SEED = 20240404

_fonts = {}


def font(path, size):
    key = (path, size)
    if key not in _fonts:
        _fonts[key] = ImageFont.truetype(path, size)
    return _fonts[key]


class Page:
    """A grayscale canvas with a paper tone and an ink tone."""

    def __init__(self, rng, width, height):
        self.paper = rng.randint(236, 255)
        self.ink = rng.randint(0, 45)
        self.img = Image.new("L", (width, height), self.paper)
        self.d = ImageDraw.Draw(self.img)
        self.w, self.h = width, height

    def text(self, xy, s, f, anchor="la"):
        x0, _, x1, _ = self.d.textbbox(xy, s, font=f, anchor=anchor)
        assert x0 >= 30 and x1 <= self.w - 30, f"{s!r} does not fit a {self.w} px page"
        self.d.text(xy, s, font=f, fill=self.ink, anchor=anchor)

    def centered(self, y, s, f):
        self.text((self.w // 2, y), s, f, anchor="ma")

    def right(self, x, y, s, f):
        self.text((x, y), s, f, anchor="ra")

    def line(self, xy, width=2):
        self.d.line(xy, fill=self.ink, width=width)

    def dashed(self, x0, x1, y, dash=10, gap=6, width=2):
        x = x0
        while x < x1:
            self.d.line((x, y, min(x + dash, x1), y), fill=self.ink, width=width)
            x += dash + gap

    def underline(self, x0, x1, y):
        self.d.line((x0, y, x1, y), fill=(self.ink + 2 * self.paper) // 3, width=1)

    def crop(self, height):
        self.img = self.img.crop((0, 0, self.w, height))
        return self.img


# ---------------------------------------------------------------- answers and their variants

def money(cents):
    return f"{cents // 100}.{cents % 100:02d}"


def money_accept(s):
    return [s, "$" + s, "€" + s, "£" + s, s + " eur", s + " euros", s + " dollars"]


MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]


def ordinal(n):
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def date_text(dt):
    return f"{dt.day} {MONTHS[dt.month - 1]} {dt.year}"


def date_accept(dt):
    m, d, y, o = MONTHS[dt.month - 1].lower(), dt.day, dt.year, ordinal(dt.day)
    forms = [f"{d} {m} {y}", f"{d} {m}", f"{m} {d}, {y}", f"{m} {d} {y}", f"{m} {d}", f"{o} {m} {y}",
             f"{o} {m}", f"{m} {o}, {y}", f"{m} {o}", f"{o} of {m} {y}", f"{o} of {m}",
             f"{y}-{dt.month:02d}-{d:02d}", f"{d:02d}/{dt.month:02d}/{y}", f"{d}/{dt.month}/{y}"]
    return list(dict.fromkeys(forms))


def clock(h, m, style):
    """(text as printed, accepted variants) of h:m in "12" (6:30 PM) or "24" (18:30) style."""
    h12, ampm = (h - 1) % 12 + 1, "am" if h < 12 else "pm"
    variants = [f"{h12}:{m:02d} {ampm}", f"{h12}:{m:02d}{ampm}", f"{h12}.{m:02d} {ampm}", f"{h:02d}:{m:02d}",
                f"{h}:{m:02d}", f"{h12}:{m:02d}"]
    if m == 0:
        variants += [f"{h12} {ampm}", f"{h12}{ampm}", f"{h12} o'clock"]
    shown = f"{h12}:{m:02d} {ampm.upper()}" if style == "12" else f"{h:02d}:{m:02d}"
    return shown, list(dict.fromkeys([shown.lower()] + variants))


def record(image, kind, question, answer, accept):
    acc = list(dict.fromkeys([answer.lower()] + [a.lower() for a in accept]))
    return {"image": image, "kind": kind, "question": question, "answer": answer, "accept": acc}


# ---------------------------------------------------------------- receipts

SHOPS = [
    ("CORNER SHOP", [("Bread", 240), ("Milk", 115), ("Apples", 360), ("Coffee", 725), ("Eggs", 289), ("Butter", 199),
                     ("Rice", 330), ("Tea", 410)]),
    ("BLUE DOOR BAKERY", [("Sourdough", 450), ("Croissant", 185), ("Rye loaf", 390), ("Cinnamon roll", 275),
                          ("Baguette", 160), ("Scone", 225), ("Carrot cake", 520)]),
    ("GREEN LEAF MARKET", [("Tomatoes", 318), ("Spinach", 249), ("Carrots", 135), ("Avocado", 210), ("Lemons", 170),
                           ("Potatoes", 425), ("Onions", 142)]),
    ("RIVERSIDE CAFE", [("Cappuccino", 340), ("Latte", 360), ("Muffin", 295), ("Orange juice", 310), ("Bagel", 265),
                        ("Soup", 580), ("Sandwich", 645)]),
    ("OAK STREET PHARMACY", [("Toothpaste", 385), ("Plasters", 299), ("Vitamin C", 850), ("Hand cream", 615),
                             ("Shampoo", 545), ("Tissues", 120)]),
    ("SUNNY HARDWARE", [("Hammer", 1450), ("Screws", 375), ("Light bulb", 495), ("Tape", 260), ("Paint brush", 690),
                        ("Batteries", 780), ("Glue", 335)]),
    ("NORTH STAR BOOKS", [("Notebook", 450), ("Atlas", 2299), ("Pencils", 325), ("Novel", 1199), ("Bookmark", 150),
                          ("Cookbook", 1875)]),
    ("HILLTOP DELI", [("Cheese", 620), ("Olives", 395), ("Ham", 710), ("Salami", 565), ("Crackers", 245),
                      ("Hummus", 330), ("Pickles", 285)]),
    ("CITY NEWSAGENT", [("Newspaper", 250), ("Magazine", 595), ("Chocolate", 135), ("Water", 110), ("Gum", 95),
                        ("Postcard", 80), ("Stamps", 340)]),
    ("MOON RIVER TEA HOUSE", [("Green tea", 380), ("Earl Grey", 350), ("Shortbread", 225), ("Lemon tart", 475),
                              ("Chai latte", 420), ("Fruit scone", 260)]),
    ("FRESH FISH CO", [("Salmon", 1240), ("Cod", 985), ("Prawns", 760), ("Mussels", 540), ("Tuna steak", 1120),
                       ("Lemon", 60)]),
    ("PETAL FLOWERS", [("Roses", 1500), ("Tulips", 850), ("Vase", 1295), ("Sunflowers", 700), ("Card", 275),
                       ("Lilies", 1150)]),
]
STREETS = ["Harbour Road", "Mill Lane", "King Street", "Station Road", "Church Street", "Park Avenue", "Bridge Street",
           "Market Square", "Queens Road", "High Street", "Elm Grove", "Castle Hill"]


RECEIPT_COLUMNS = 26


def receipt(rng, image, ask, shop):
    name, stock = shop
    items = rng.sample(stock, rng.randint(3, min(6, len(stock))))
    total = sum(p for _, p in items)
    date = datetime.date(2024, 1, 1) + datetime.timedelta(days=rng.randrange(366))
    hh, mm = rng.randint(8, 19), rng.randrange(60)
    w = rng.choice([600, 640, 680, 720])
    pg = Page(rng, w, 1200)
    bold, mono = font(BOLD, rng.choice([32, 34, 36])), font(MONO, rng.choice([26, 28]))
    small = font(SANS, 22)
    # a till roll's column, centred: prices far from their items make Tesseract's page layout see two columns
    width = RECEIPT_COLUMNS * mono.getlength("0")
    margin = int((w - width) / 2)
    y = 34
    pg.centered(y, name, bold)
    y += 52
    pg.centered(y, f"{rng.randint(2, 199)} {rng.choice(STREETS)}", small)
    y += 40
    pg.text((margin, y), f"Date: {date.isoformat()}", mono)
    pg.right(w - margin, y, f"{hh:02d}:{mm:02d}", mono)
    y += 46
    pg.dashed(margin, w - margin, y)
    y += 22
    for item, price in items:
        pg.text((margin, y), item, mono)
        pg.right(w - margin, y, money(price), mono)
        y += 44
    pg.line((margin, y + 4, w - margin, y + 4), width=3)
    y += 22
    tbold = font(MONO_BOLD, mono.size + 4)
    pg.text((margin, y), "TOTAL", tbold)
    pg.right(w - margin, y, money(total), tbold)
    y += 54
    if rng.random() < 0.5:
        paid = next(c for c in (500, 1000, 2000, 5000, 10000) if c > total)
        pg.text((margin, y), "CASH", mono)
        pg.right(w - margin, y, money(paid), mono)
        y += 40
        pg.text((margin, y), "CHANGE", mono)
        pg.right(w - margin, y, money(paid - total), mono)
        y += 46
    else:
        pg.text((margin, y), "CARD", mono)
        pg.right(w - margin, y, f"**** {rng.randint(1000, 9999)}", mono)
        y += 46
    y += 10
    pg.centered(y, "Thank you for shopping with us!", small)
    img = pg.crop(y + 56)
    title = name.title()
    if ask == "total":
        q = record(image, "receipt", "What is the total amount on this receipt?", money(total), money_accept(money(total)))
    elif ask == "shop":
        q = record(image, "receipt", "What is the name of the shop?", title, [name.lower(), "the " + name.lower()])
    else:
        item, price = rng.choice(items)
        shown = item if any(c.isupper() for c in item[1:]) else item.lower()  # "the bread", "the Earl Grey"
        q = record(image, "receipt", f"How much did the {shown} cost?", money(price), money_accept(money(price)))
    return img, q


# ---------------------------------------------------------------- notices

EVENTS = [("BOOK CLUB MEETING", "meeting", "Members and guests are welcome."),
          ("FIRST AID TRAINING", "training", "Please bring a notebook."),
          ("CHOIR REHEARSAL", "rehearsal", "All voices are welcome."),
          ("PHOTOGRAPHY WORKSHOP", "workshop", "Bring your own camera."),
          ("STAFF MEETING", "meeting", "Attendance is required."),
          ("GARDEN CLUB TALK", "talk", "Tea and biscuits will be served."),
          ("CHESS TOURNAMENT", "tournament", "Boards are provided."),
          ("YOGA CLASS", "class", "Please bring a mat."),
          ("RESIDENTS MEETING", "meeting", "Everyone in the building may attend."),
          ("CAREERS FAIR", "fair", "Open to all students."),
          ("SCIENCE LECTURE", "lecture", "Free entry, no booking needed."),
          ("QUIZ NIGHT", "quiz", "Teams of up to four players.")]
BUILDINGS = ["Main Library", "East Building", "Town Hall", "Community Centre", "North Wing", "Arts Centre",
             "West Campus", "Old School House"]


def notice(rng, image, ask, event):
    title, noun, note = event
    date = datetime.date(2025, 1, 1) + datetime.timedelta(days=rng.randrange(365))
    start_h, start_m = rng.randint(9, 19), rng.choice([0, 15, 30, 45])
    style = rng.choice(["12", "24"])
    start, start_acc = clock(start_h, start_m, style)
    end, _ = clock(start_h + rng.randint(1, 2), start_m, style)
    room = f"Room {rng.randint(1, 4)}{rng.randint(0, 3)}{rng.randint(1, 9)}"
    building = rng.choice(BUILDINGS)
    serif = rng.random() < 0.5
    tfont = font(SERIF_BOLD if serif else BOLD, rng.choice([40, 44]))
    body = font(SERIF if serif else SANS, rng.choice([28, 30]))
    label = font(SERIF_BOLD if serif else BOLD, body.size)
    weekday = date.strftime("%A")
    rows = [("Date:", f"{weekday}, {date_text(date)}"),
            ("Time:", f"{start} - {end}" if rng.random() < 0.6 else start),
            ("Place:", f"{room}, {building}")]
    widest = max(body.getlength(v) for _, v in rows)
    w = min(900, max(rng.choice([760, 800, 840]), int(200 + widest + 70)))
    while tfont.getlength(title) > w - 120:
        tfont = font(tfont.path, tfont.size - 2)
    pg = Page(rng, w, 700)
    y = 50
    pg.centered(y, title, tfont)
    y += 80
    pg.text((60, y), note, body)
    y += 66
    for lab, val in rows:
        pg.text((60, y), lab, label)
        pg.text((60 + 140, y), val, body)
        y += 56
    y += 20
    pg.text((60, y), "Questions? Ask at the front desk.", font(SERIF if serif else SANS, 22))
    img = pg.crop(y + 70)
    pg.d = ImageDraw.Draw(img)
    pg.d.rectangle((14, 14, w - 15, img.height - 15), outline=pg.ink, width=3)
    if ask == "time":
        q = record(image, "notice", f"When does the {noun} start?", start, start_acc)
    elif ask == "room":
        q = record(image, "notice", f"Which room is the {noun} in?", room, [room.lower(), room.split()[1]])
    elif ask == "date":
        q = record(image, "notice", f"On what date is the {noun}?", date_text(date), date_accept(date))
    else:
        q = record(image, "notice", f"On which day of the week is the {noun}?", weekday, [weekday.lower()])
    return img, q


# ---------------------------------------------------------------- signs

WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine",
         10: "ten", 11: "eleven", 12: "twelve"}
DESTINATIONS = ["York", "Leeds", "Bristol", "Glasgow", "Cardiff", "Oxford", "Brighton", "Norwich"]


def sign(rng, image, template):
    """A sign: a few lines of big text, the question and the answer."""
    if template == "platform":
        n = rng.randint(1, 12)
        lines = [(f"PLATFORM {n}", 1.0), (f"Trains to {rng.choice(DESTINATIONS)}", 0.5)]
        qa = ("Which platform is this?", str(n), [str(n), f"platform {n}", WORDS[n], f"platform {WORDS[n]}"])
    elif template == "gate":
        g = f"{rng.choice('BCDEF')}{rng.randint(2, 39)}"
        lines = [(f"GATE {g}", 1.0), (f"Flights to {rng.choice(DESTINATIONS[4:] + ['Rome', 'Madrid'])}", 0.5)]
        qa = ("Which gate is this?", g, [g.lower(), f"gate {g.lower()}"])
    elif template == "hours":
        o, c = rng.choice([8, 9, 10]), rng.choice([4, 5, 6, 7])
        lines = [("OPEN", 1.0), (f"{o} AM - {c} PM", 0.8), ("MONDAY - SATURDAY", 0.45)]
        if rng.random() < 0.5:
            _, acc = clock(c + 12, 0, "12")
            qa = ("What time does it close?", f"{c} PM", acc)
        else:
            _, acc = clock(o, 0, "12")
            qa = ("What time does it open?", f"{o} AM", acc)
    elif template == "parking":
        lines = [("NO PARKING", 1.0), ("AT ANY TIME", 0.55)]
        qa = ("What is not allowed here?", "Parking", ["parking", "no parking", "parking is not allowed"])
    elif template == "speed":
        n = rng.choice([20, 30, 40, 50, 60])
        lines = [("SPEED LIMIT", 0.75), (str(n), 1.25)]
        qa = ("What is the speed limit?", str(n), [str(n), f"{n} mph", f"{n} km/h", f"{n} kmh", f"{n} kph"])
    elif template == "floor":
        n = rng.randint(2, 9)
        lines = [(f"FLOOR {n}", 1.0), (f"Offices {n}01 - {n}{rng.randint(2, 4)}0", 0.5)]
        qa = ("Which floor is this?", str(n), [str(n), f"floor {n}", WORDS[n], f"floor {WORDS[n]}",
                                               {2: "2nd", 3: "3rd"}.get(n, f"{n}th")])
    elif template == "closed":
        day = rng.choice(["SUNDAYS", "MONDAYS", "TUESDAYS", "WEDNESDAYS"])
        lines = [("CLOSED ON", 0.8), (day, 1.0)]
        d = day.lower()
        qa = ("On which day is it closed?", day.title(), [d, d[:-1], "on " + d, "on " + d[:-1]])
    elif template == "bus":
        n = rng.randint(3, 99)
        lines = [(f"BUS {n}", 1.0), ("to City Centre", 0.5)]
        qa = ("Which bus stops here?", str(n), [str(n), f"bus {n}", f"number {n}", f"the {n}"])
    elif template == "wet":
        lines = [("CAUTION", 0.8), ("WET FLOOR", 1.0)]
        qa = ("What does the sign warn about?", "Wet floor", ["wet floor", "a wet floor", "the wet floor",
                                                             "the floor is wet", "caution wet floor"])
    else:  # height
        h = rng.choice(["2.3", "2.4", "2.5", "2.6", "2.8", "3.2"])
        lines = [("MAX HEIGHT", 0.8), (f"{h} m", 1.0)]
        qa = ("What is the maximum height?", f"{h} m", [f"{h} m", f"{h}m", h, f"{h} metres", f"{h} meters"])
    w = rng.choice([700, 760, 820, 880])
    big = rng.choice([60, 66, 72])  # Tesseract misreads bold glyphs much above 80 px and drops them near 100
    fonts = [font(BOLD, max(26, min(80, int(big * s)))) for _, s in lines]
    # shrink lines that do not fit the width
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    for i, (s, _) in enumerate(lines):
        while probe.textlength(s, font=fonts[i]) > w - 120:
            fonts[i] = font(BOLD, fonts[i].size - 4)
    heights = [f.getbbox("HIg0")[3] for f in fonts]
    gap = 26
    h = sum(heights) + gap * (len(lines) - 1) + 140
    pg = Page(rng, w, h)
    pg.d.rounded_rectangle((16, 16, w - 17, h - 17), radius=24, outline=pg.ink, width=8)
    y = 70
    for (s, _), f, fh in zip(lines, fonts, heights):
        pg.centered(y, s, f)
        y += fh + gap
    return pg.img, record(image, "sign", qa[0], qa[1], qa[2])


# ---------------------------------------------------------------- forms

PEOPLE = ["Maria Silva", "Tomasz Nowak", "Aiko Tanaka", "James O'Neill", "Fatima Haddad", "Lucas Moreau",
          "Ingrid Larsen", "Carlos Mendes", "Priya Sharma", "Oliver Grant", "Elena Rossi", "Kwame Mensah",
          "Hannah Becker", "Daniel Kim"]
CITIES = ["Lisbon", "Krakow", "Osaka", "Dublin", "Toronto", "Lyon", "Bergen", "Valencia", "Leeds", "Tampere",
          "Graz", "Utrecht", "Adelaide", "Bologna"]
FORMS = [("LIBRARY MEMBERSHIP APPLICATION", "applicant", False),
         ("GYM REGISTRATION FORM", "member", False),
         ("ORDER FORM", "customer", True),
         ("DELIVERY DETAILS", "customer", True),
         ("VOLUNTEER APPLICATION", "applicant", False)]


def form(rng, image, ask, person, city):
    kinds = [f for f in FORMS if f[2]] if ask == "order" else FORMS
    title, who, has_order = rng.choice(kinds)
    dob = datetime.date(1950, 1, 1) + datetime.timedelta(days=rng.randrange(365 * 55))
    phone = f"555-01{rng.randint(0, 99):02d}"
    order = str(rng.randint(10000, 999999))
    fields = [("Name", person), ("Date of birth", date_text(dob)), ("City", city), ("Phone", phone)]
    if has_order:
        fields.insert(0, ("Order number", order))
    w = rng.choice([780, 820, 860])
    pg = Page(rng, w, 900)
    label, value = font(SANS, rng.choice([26, 28])), font(rng.choice([MONO, SERIF]), rng.choice([28, 30]))
    pg.centered(40, title, font(BOLD, 36 if len(title) < 26 else 32))
    y = 120
    pg.text((50, y), "Please fill in all fields in capital letters or clear print.", font(SANS, 20))
    y += 60
    xv = 50 + max(int(pg.d.textlength(l + ":", font=label)) for l, _ in fields) + 24
    for lab, val in fields:
        pg.text((50, y), lab + ":", label)
        pg.text((xv, y - 2), val, value)
        pg.underline(xv - 6, w - 50, y + value.size + 14)  # solid: dotted rules break Tesseract's lines
        y += 74
    y += 10
    pg.text((50, y), "Signature:", label)
    pg.line((xv - 6, y + label.size + 6, w - 250, y + label.size + 6), width=1)
    img = pg.crop(y + label.size + 50)
    if ask == "city":
        q = record(image, "form", f"What city does the {who} live in?", city, [city.lower()])
    elif ask == "name":
        q = record(image, "form", f"What is the name of the {who}?", person, [person.lower(), person.lower().replace("'", "")])
    elif ask == "dob":
        q = record(image, "form", f"What is the {who}'s date of birth?", date_text(dob), date_accept(dob))
    elif ask == "phone":
        q = record(image, "form", f"What is the {who}'s phone number?", phone,
                   [phone, phone.replace("-", ""), phone.replace("-", " ")])
    else:
        q = record(image, "form", "What is the order number?", order, [order, "#" + order, "no. " + order])
    return img, q


# ---------------------------------------------------------------- writing and checking

ASKS = {
    "receipt": ["total"] * 4 + ["shop"] * 3 + ["item"] * 3,
    "notice": ["time"] * 3 + ["room"] * 3 + ["date"] * 2 + ["weekday"] * 2,
    "sign": ["platform", "gate", "hours", "parking", "speed", "floor", "closed", "bus", "wet", "height"],
    "form": ["city"] * 3 + ["name"] * 2 + ["dob"] * 2 + ["order"] * 2 + ["phone"],
}
KINDS = ["receipt", "notice", "sign", "form"]


def generate():
    rng = random.Random(SEED)
    asks = {k: rng.sample(v, len(v)) for k, v in ASKS.items()}
    shops = rng.sample(SHOPS, PER_KIND)
    events = rng.sample(EVENTS, PER_KIND)
    people = rng.sample(PEOPLE, PER_KIND)
    cities = rng.sample(CITIES, PER_KIND)
    docs = []
    for i in range(PER_KIND * len(KINDS)):
        kind, j = KINDS[i % len(KINDS)], i // len(KINDS)
        image = f"{i + 1:02d}-{kind}.png"
        r = random.Random(f"{SEED}/{image}")  # each document its own stream: editing one leaves the others
        if kind == "receipt":
            img, q = receipt(r, image, asks[kind][j], shops[j])
        elif kind == "notice":
            img, q = notice(r, image, asks[kind][j], events[j])
        elif kind == "sign":
            img, q = sign(r, image, asks[kind][j])
        else:
            img, q = form(r, image, asks[kind][j], people[j], cities[j])
        docs.append((img, q))
    return docs


def write(docs):
    os.makedirs(OUT, exist_ok=True)
    for name in os.listdir(OUT):
        if re.fullmatch(r"\d\d-(receipt|notice|sign|form)\.png", name):
            os.remove(os.path.join(OUT, name))
    for img, q in docs:
        img.save(os.path.join(OUT, q["image"]), optimize=True)
    with open(os.path.join(OUT, "questions.json"), "w") as f:
        json.dump([q for _, q in docs], f, indent=1, ensure_ascii=False)
        f.write("\n")


def found(answer, text):
    """The answer in the OCR text: case-insensitive, on word boundaries, any spacing between its parts."""
    norm = lambda s: s.lower().replace("\u2019", "'").replace("\u2018", "'")
    parts = re.findall(r"[a-z0-9]+|[^a-z0-9\s]", norm(answer))
    pattern = r"(?<![a-z0-9])" + r"\s*".join(re.escape(p) for p in parts) + r"(?![a-z0-9])"
    return re.search(pattern, norm(text)) is not None


def ocr(path, args):
    out = subprocess.run(["tesseract", path, "-", *args], capture_output=True, text=True, check=True)
    return out.stdout


class CAPI:
    """Tesseract through its C API the way the OCR expert (Sources/AdapterExperts/OCRExpert.swift) calls it:
    TessBaseAPIInit3(eng), SetImage of 8-bit RGB, SetSourceResolution(300), GetUTF8Text, with the API's
    default page segmentation (a single block)."""

    def __init__(self):
        import ctypes
        self.c = ctypes
        lib = ctypes.CDLL("libtesseract.so.5")
        lib.TessBaseAPICreate.restype = ctypes.c_void_p
        lib.TessBaseAPIInit3.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
        lib.TessBaseAPISetImage.argtypes = [ctypes.c_void_p, ctypes.c_char_p] + [ctypes.c_int] * 4
        lib.TessBaseAPISetSourceResolution.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.TessBaseAPIGetUTF8Text.argtypes = [ctypes.c_void_p]
        lib.TessBaseAPIGetUTF8Text.restype = ctypes.c_void_p
        lib.TessDeleteText.argtypes = [ctypes.c_void_p]
        lib.TessBaseAPIClear.argtypes = [ctypes.c_void_p]
        self.lib, self.api = lib, lib.TessBaseAPICreate()
        if lib.TessBaseAPIInit3(self.api, None, b"eng") != 0:
            raise OSError("Tesseract has no eng language data")

    def __call__(self, path):
        img = Image.open(path).convert("RGB")
        w, h = img.size
        self.lib.TessBaseAPISetImage(self.api, img.tobytes(), w, h, 3, 3 * w)
        self.lib.TessBaseAPISetSourceResolution(self.api, 300)
        raw = self.lib.TessBaseAPIGetUTF8Text(self.api)
        text = self.c.string_at(raw).decode("utf-8", "replace") if raw else ""
        if raw:
            self.lib.TessDeleteText(raw)
        self.lib.TessBaseAPIClear(self.api)
        return text

    def close(self):
        self.lib.TessBaseAPIEnd.argtypes = [self.c.c_void_p]
        self.lib.TessBaseAPIDelete.argtypes = [self.c.c_void_p]
        self.lib.TessBaseAPIEnd(self.api)
        self.lib.TessBaseAPIDelete(self.api)


def check(docs, show):
    if shutil.which("tesseract") is None:
        sys.exit("tesseract is not installed (apt-get install -y tesseract-ocr tesseract-ocr-eng)")
    modes = [("tesseract FILE -", lambda p: ocr(p, []))]
    try:
        modes.append(("C API as the OCR expert calls it", CAPI()))
    except OSError as e:
        print(f"(libtesseract.so.5 not usable: {e}; using tesseract FILE - --psm 6 --dpi 300 instead)")
        modes.append(("tesseract FILE - --psm 6 --dpi 300", lambda p: ocr(p, ["--psm", "6", "--dpi", "300"])))
    hits = {m: 0 for m, _ in modes}
    for n, (_, q) in enumerate(docs):
        path = os.path.join(OUT, q["image"])
        marks = []
        for m, run in modes:
            text = run(path)
            ok = found(q["answer"], text)
            hits[m] += ok
            marks.append("hit " if ok else "MISS")
            if n < show and m == modes[0][0]:
                print(f"---- {q['image']} ({m})\n{text.strip()}\n----")
        print(f"{q['image']:18s} {' '.join(marks)}  {q['question']} -> {q['answer']}")
    for _, run in modes:
        if isinstance(run, CAPI):
            run.close()
    total, ok = len(docs), True
    for m, _ in modes:
        print(f"OCR hit rate ({m}): {hits[m]}/{total} = {100 * hits[m] / total:.1f}%")
        ok &= hits[m] >= 0.95 * total
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="run Tesseract on every image and count answer hits")
    ap.add_argument("--show", type=int, default=0, help="with --check: print the OCR text of the first N images")
    args = ap.parse_args()
    for f in (SANS, BOLD, MONO, MONO_BOLD, SERIF, SERIF_BOLD):
        if not os.path.exists(f):
            sys.exit(f"missing font {f} (apt-get install -y fonts-dejavu-core)")
    docs = generate()
    write(docs)
    size = sum(os.path.getsize(os.path.join(OUT, q["image"])) for _, q in docs)
    print(f"wrote {len(docs)} images and questions.json to {OUT} ({size / 1024:.0f} KB of images)")
    if args.check and not check(docs, args.show):
        sys.exit(1)


if __name__ == "__main__":
    main()
