"""Stage three: maps on the cortex, ROI summaries and hierarchy score, comparisons, the HTML report, exports."""
