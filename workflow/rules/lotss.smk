# Rules: lotss (see the radiogen library for the logic).
