"""Running the platform: the CLI, the embedded development stack, migrations, seeding and
housekeeping."""
