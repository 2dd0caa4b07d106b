# Rules: sample (see the radiogen library for the logic).
