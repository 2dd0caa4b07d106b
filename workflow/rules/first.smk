# Rules: first (see the radiogen library for the logic).
