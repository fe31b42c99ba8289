"""The reporter's file side: finding fits and their inputs under the run root, and writing figures, tables and pages."""
