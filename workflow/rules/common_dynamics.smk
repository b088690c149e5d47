# figures.smk's input functions, kept apart for figures.smk's owner to take beside its rules
# (then this file and its `include:` go). The training-dynamics paths are in qid.grid.
from qid.figures import DATA
from qid.rule_args import figure_args

# A figure draws the QiD table and the fits, or the other tables of qid.figures.DATA.
FIGURE_DATA = grid.figure_data(config)


def figure_inputs(fig):
    if fig in DATA:
        return {key: FIGURE_DATA[key] for key in DATA[fig]}
    return {"table": grid.QID_TABLE, "fits": grid.FITS}
