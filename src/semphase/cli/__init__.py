"""Thin Typer commands: parse options, call the library, print results. No logic lives here."""
