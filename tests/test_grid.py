from qid import grid


def test_a_variant_name_parses_back_to_its_cell():
    cell = grid.Cell(grid.Checkpoint("s", "z", 8), "bnb_nf4", 4)
    assert cell.variant == grid.variant("bnb_nf4", 4) == "bnb_nf4-4bit"
    assert grid.parse_variant(cell.variant) == ("bnb_nf4", 4)
    assert grid.parse_variant(grid.BASE) is None and grid.parse_variant("rtn-bit") is None
