# Rules: evaluate (see the radiogen library for the logic).
