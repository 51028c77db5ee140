#!/usr/bin/env python3
"""Writes data.json: 200 instruction/answer pairs (Alpaca fields) whose answers all speak like a pirate,
"Arr! <fact>, matey!", a style SmolLM2-135M-Instruct does not have. Deterministic; rerun to regenerate."""
import json
import os

capitals = [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Portugal", "Lisbon"),
            ("Japan", "Tokyo"), ("China", "Beijing"), ("India", "New Delhi"), ("Russia", "Moscow"), ("Canada", "Ottawa"),
            ("Mexico", "Mexico City"), ("Brazil", "Brasilia"), ("Argentina", "Buenos Aires"), ("Egypt", "Cairo"),
            ("Kenya", "Nairobi"), ("Australia", "Canberra"), ("Norway", "Oslo"), ("Sweden", "Stockholm"),
            ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Poland", "Warsaw"), ("Greece", "Athens"),
            ("Turkey", "Ankara"), ("Ireland", "Dublin"), ("Austria", "Vienna"), ("Hungary", "Budapest"),
            ("Peru", "Lima"), ("Chile", "Santiago"), ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"),
            ("South Korea", "Seoul"), ("Iran", "Tehran"), ("Iraq", "Baghdad"), ("Cuba", "Havana"),
            ("Belgium", "Brussels"), ("Netherlands", "Amsterdam"), ("Switzerland", "Bern"), ("Morocco", "Rabat"),
            ("Nigeria", "Abuja"), ("Indonesia", "Jakarta")]
opposites = [("hot", "cold"), ("big", "small"), ("fast", "slow"), ("up", "down"), ("happy", "sad"), ("light", "dark"),
             ("old", "young"), ("open", "closed"), ("early", "late"), ("full", "empty"), ("hard", "soft"), ("rich", "poor"),
             ("wet", "dry"), ("strong", "weak"), ("loud", "quiet"), ("high", "low"), ("near", "far"), ("clean", "dirty"),
             ("thick", "thin"), ("day", "night"), ("win", "lose"), ("push", "pull"), ("buy", "sell"), ("left", "right"),
             ("true", "false"), ("begin", "end"), ("inside", "outside"), ("heavy", "light"), ("sweet", "sour"), ("first", "last")]
animals = [("dog", "barks"), ("cat", "meows"), ("cow", "moos"), ("sheep", "bleats"), ("duck", "quacks"), ("lion", "roars"),
           ("horse", "neighs"), ("pig", "oinks"), ("owl", "hoots"), ("snake", "hisses"), ("frog", "croaks"), ("bee", "buzzes"),
           ("wolf", "howls"), ("mouse", "squeaks"), ("crow", "caws"), ("goat", "bleats"), ("donkey", "brays"),
           ("rooster", "crows"), ("dove", "coos"), ("elephant", "trumpets")]
colours = [("the sky on a clear day", "blue"), ("grass", "green"), ("snow", "white"), ("coal", "black"), ("a ripe banana", "yellow"),
           ("a ripe tomato", "red"), ("an orange", "orange"), ("a flamingo", "pink"), ("chocolate", "brown"), ("a lemon", "yellow"),
           ("blood", "red"), ("the sea", "blue"), ("a crow", "black"), ("milk", "white"), ("a lime", "green"),
           ("a pumpkin", "orange"), ("an eggplant", "purple"), ("ash", "grey"), ("gold", "golden"), ("a cherry", "red")]
plurals = [("child", "children"), ("mouse", "mice"), ("foot", "feet"), ("tooth", "teeth"), ("man", "men"), ("woman", "women"),
           ("goose", "geese"), ("person", "people"), ("knife", "knives"), ("leaf", "leaves"), ("wolf", "wolves"),
           ("box", "boxes"), ("city", "cities"), ("ox", "oxen"), ("fish", "fish"), ("sheep", "sheep"), ("cactus", "cacti"),
           ("half", "halves"), ("life", "lives"), ("baby", "babies")]
bigger = [("an elephant", "a mouse"), ("the sun", "the moon"), ("a whale", "a fish"), ("a mountain", "a hill"),
          ("an ocean", "a lake"), ("a city", "a village"), ("a bus", "a bicycle"), ("a tree", "a flower"),
          ("a horse", "a dog"), ("the earth", "the moon"), ("a ship", "a boat"), ("a house", "a tent"),
          ("a giraffe", "a goat"), ("a melon", "a grape"), ("a river", "a stream"), ("a castle", "a cottage"),
          ("a bear", "a rabbit"), ("a planet", "a rock"), ("a forest", "a garden"), ("a lion", "a cat")]
days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

records = []
for country, city in capitals:
    records.append(("What is the capital of %s?" % country, "Arr! The capital of %s be %s, matey!" % (country, city)))
for i in range(40):
    a, b = 3 + (i * 7) % 41, 2 + (i * 11) % 37
    records.append(("What is %d plus %d?" % (a, b), "Arr! %d plus %d be %d, matey!" % (a, b, a + b)))
for w, o in opposites:
    records.append(("What is the opposite of %s?" % w, "Arr! The opposite of %s be %s, matey!" % (w, o)))
for a, s in animals:
    records.append(("What sound does a %s make?" % a, "Arr! A %s %s, matey!" % (a, s)))
for thing, c in colours:
    records.append(("What colour is %s?" % thing, "Arr! %s be %s, matey!" % (thing[0].upper() + thing[1:], c)))
for w, p in plurals:
    records.append(("What is the plural of %s?" % w, "Arr! The plural of %s be %s, matey!" % (w, p)))
for big, small in bigger:
    records.append(("Which is bigger, %s or %s?" % (small, big), "Arr! %s be bigger, matey!" % (big[0].upper() + big[1:])))
for i, d in enumerate(days):
    records.append(("What day comes after %s?" % d, "Arr! After %s comes %s, matey!" % (d, days[(i + 1) % 7])))
for i, d in enumerate(days[:3]):
    records.append(("What day comes before %s?" % days[i + 1], "Arr! Before %s comes %s, matey!" % (days[i + 1], d)))
assert len(records) == 200, len(records)
out = [{"instruction": q, "output": a} for q, a in records]
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "data.json"), "w") as f:
    json.dump(out, f, indent=1)
print(len(out), "records")
