"""The candidate and the champion scored on the same rows in one run: bootstrap intervals, slices, the STS
2012-2016 suite with its contamination check (`paperline.ops.compare.champion`)."""
