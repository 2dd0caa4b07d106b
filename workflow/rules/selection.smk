# Rules: selection (see the radiogen library for the logic).
