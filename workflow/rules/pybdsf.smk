# Rules: pybdsf (see the radiogen library for the logic).
