// The pair page's comparison: a slider reveals the target over the source; Blink swaps them.
document.querySelectorAll(".compare").forEach((box) => {
  const over = box.querySelector("img.over");
  const slider = box.querySelector(".slider");
  const blink = box.querySelector(".blink");
  const reveal = (percent) => { over.style.clipPath = `inset(0 0 0 ${percent}%)`; };
  slider.addEventListener("input", () => reveal(100 - Number(slider.value)));
  let timer = null;
  blink.addEventListener("click", () => {
    if (timer) { clearInterval(timer); timer = null; blink.textContent = "Blink"; reveal(100 - Number(slider.value)); return; }
    let showTarget = true;
    timer = setInterval(() => { reveal(showTarget ? 0 : 100); showTarget = !showTarget; }, 500);
    blink.textContent = "Stop";
  });
});
