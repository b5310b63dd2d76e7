"""Training (workstation): clean meter data, Keras CNN + LSTM, int8 TFLite bundles, backtests."""
