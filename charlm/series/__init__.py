"""Forecasting a series with a GRU: the second use of a recurrent network, beside the language models.

    data.py      a series read from a CSV/TSV column, one number per line or Python values; checked; its
                 timestamps' step and its season
    model.py     the forecaster: nn.GRU over scaled changes, lag and calendar features; its likelihoods
    train.py     the plan for a series and budget, and the training loop into a run folder
    forecast.py  sample paths side by side, and the table of median and quantiles
    backtest.py  MASE, sMAPE, CRPS, pinball loss and coverage, against the seasonal-naive forecast
    run.py       one job from start to end (train, resume, or a saved run with new observations), and forecast()

Entry point: ``charlm.forecast(values, horizon=...)``.
"""
