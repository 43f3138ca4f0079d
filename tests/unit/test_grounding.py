"""The grounding score on hand-written rationales against a small catalogue."""
from __future__ import annotations

import pandas as pd

from components.grounding import Catalogue, grounding_summary

CATALOGUE = pd.DataFrame({
    "title": ["Maybelline Expert Wear Eyeshadow Singles", "Revlon ColorStay Liquid Eyeliner",
              "e.l.f. Studio Blush Palette", "Suave Naturals Daily Clarifying Shampoo", "OGX Argan Oil Conditioner",
              "Gratiae Organics Replenishing Eye Cream"],
    "brand": ["Maybelline", "Revlon", "e.l.f.", "Suave", "OGX", None],
    "categories": [["Beauty", "Makeup", "Eyes"], ["Beauty", "Makeup", "Eyes"], ["Beauty", "Makeup", "Face"],
                   ["Beauty", "Hair Care", "Shampoos"], ["Beauty", "Hair Care", "Conditioners"],
                   ["Beauty", "Skin Care", "Eyes"]],
})


def test_vacuous_answers_name_no_catalogue_term():
    catalogue = Catalogue(CATALOGUE)
    vacuous = catalogue.ground("The customer likes the brand, product type, and category.",
                               "The customer recommends the most popular beauty products.")
    assert vacuous.vacuous and vacuous.score == 0.0 and vacuous.terms == ()
    # "Beauty" is on every item: a term on more than half of the catalogue is no evidence.
    assert catalogue.ground("The customer likes beauty.", "More beauty").vacuous
    assert catalogue.ground("The customer likes makeup.", "More beauty").terms == ("makeup",)  # on half


def test_grounded_mentions_brands_categories_and_item_names():
    catalogue = Catalogue(CATALOGUE)
    history = catalogue.history_terms(["Maybelline Expert Wear Eyeshadow Singles , Maybelline , Eyes"])
    grounded = catalogue.ground("The customer likes Maybelline eyeshadow, and e.l.f. blush.",
                                "Revlon ColorStay Liquid Eyeliner, shampoos, something nice", history)
    assert not grounded.vacuous
    assert {"maybelline", "e l f", "revlon", "colorstay liquid eyeliner", "shampoos"} <= set(grounded.terms)
    # mentions: "...likes Maybelline eyeshadow", "e.l.f. blush", "Revlon ...", "shampoos", "something nice"
    assert grounded.score == 0.8
    assert 0 < grounded.from_history < 1  # Maybelline is the seed's own brand; Revlon is not
    assert catalogue.ground("The customer likes Replenishing Eye Cream", "x").terms == ("replenishing eye cream",)
    films = Catalogue(pd.DataFrame({"title": ["Jaws", "Top Gun", "The Third Man"], "brand": [None] * 3,
                                    "categories": [["Thriller"], ["Action"], ["Film-Noir"]]}))
    assert set(films.ground("The viewer may enjoy Top Gun or Jaws", "x").terms) == {"top gun", "jaws"}


def test_summary_of_a_pool():
    catalogue = Catalogue(CATALOGUE)
    answers = [("The customer likes OGX conditioners.", "OGX Argan Oil Conditioner"),
               ("The customer likes the brand.", "The most popular products")]
    rows = [catalogue.ground(a, b) for a, b in answers]
    frame = pd.DataFrame({"grounding": [r.score for r in rows], "vacuous": [r.vacuous for r in rows],
                          "from_history": [r.from_history for r in rows]})
    summary = grounding_summary(frame)
    assert summary["vacuous_share"] == 0.5 and summary["mean_grounding"] == 0.5
