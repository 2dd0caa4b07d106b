# Rules: train (see the radiogen library for the logic).
