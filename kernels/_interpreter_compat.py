"""Makes Triton's CPU interpreter (TRITON_INTERPRET=1) work with NumPy >= 2.4.

The interpreter holds every scalar as a 1-element array and converts it with
int(array) whenever a loop bound is a runtime value (``range(0, K, BLOCK_K)``).
NumPy 2.4 turned that conversion into a TypeError (triton-lang/triton#9171,
fixed upstream by #9172 after triton 3.6). We re-register ``__index__`` with
``.item()``, which is right for every NumPy version, so patching is harmless
where the interpreter is already fixed. Compiled (GPU) kernels are untouched.
"""
import triton


def apply():
    """Install the fix once, only when the interpreter is on and has the hook we wrap."""
    if not triton.knobs.runtime.interpret:
        return
    import triton.runtime.interpreter as interp

    original = getattr(interp, "_patch_lang_tensor", None)
    if original is None or getattr(original, "slimops_item_index", False):
        return

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: self.handle.data.item())

    patch_lang_tensor.slimops_item_index = True
    interp._patch_lang_tensor = patch_lang_tensor
