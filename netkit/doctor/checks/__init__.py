"""The checks, by plane (effects: each gathers its facts and hands them to a pure decision of
``netkit.doctor.core``)."""
