"""What a run is around the flow: preflight, the last step (register and promote), closing runs that died,
the run summary and typed outcomes, the sweep grid."""
