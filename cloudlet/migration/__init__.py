"""The migration ceremony (seed steps 2 to 6): reach a paired cloudlet, move an SVM there live
over TLS, and hand its devices the target's credentials.

``peer`` calls the target's peer API; ``discover`` joins its network and finds
its Manager; ``svm`` moves the SVM with libvirt; ``handoff`` asks for and
tracks the devices' credentials.
"""
