// A confirmation in a modal <dialog>: focus goes to Cancel, Escape cancels (the dialog
// element's own behaviour), and focus returns where it was.
import { $ } from "./dicom.js";

export function confirmDelete(message) {
  const dialog = $("confirm");
  const returnTo = document.activeElement;
  $("confirm-message").textContent = message;
  return new Promise((resolve) => {
    const done = (answer) => {
      dialog.removeEventListener("close", onClose);
      if (dialog.open) dialog.close();
      if (returnTo && returnTo.isConnected) returnTo.focus();
      resolve(answer);
    };
    const onClose = () => done(dialog.returnValue === "delete");
    dialog.addEventListener("close", onClose);
    dialog.returnValue = "";
    dialog.showModal();
    $("confirm-cancel").focus();
  });
}
